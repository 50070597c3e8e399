"""Starts moto's server (S3, Secrets Manager, and Step Functions with the Lambda, DynamoDB and
SNS services its states call) for the tests and the demo.

Changes to moto, each making it behave as AWS does:

1. Its Docker-free Lambda ("lambda-simple", whose results the tests queue
through /moto-api/static/lambda-simple/response) can only succeed. A queued result that is a
Lambda error payload, {"errorType": ..., "errorMessage": ...}, is answered here as AWS answers
a function error: with the X-Amz-Function-Error header, so Step Functions sees a failed task
named after errorType and its Retry and Catch rules apply.

2. Its Step Functions "aws-sdk:" integrations pass the state's parameters to boto as written.
AWS names them after the API's members in PascalCase ("ExecutionArn") and answers in
PascalCase ("Status"); the API itself (JSON protocols) uses camelCase. The translation both
ways is moto's own (_to_boto_request / _from_boto_response, used by its other integrations);
here it is switched on for aws-sdk tasks too.

3. A path that finds nothing raises States.Runtime, which no Retry or Catch handles, not even
States.ALL (Step Functions developer guide, error names): in Parameters, ResultSelector and
ItemsPath, in an intrinsic function's argument, and as the Variable of a Choice rule other than
IsPresent. moto binds nothing, or lets the state's Catch take it, or goes to the Choice's
Default, so a definition that reads a field which may be missing would pass here and fail the
execution on AWS with no notification and its lock held.

4. Its timestamp comparisons (TimestampLessThan... and their Path forms) read only
"YYYY-MM-DDThh:mm:ssZ", so a timestamp with fractional seconds, or its own $$.State.EnteredTime
("+00:00"), never compares. AWS reads RFC 3339 timestamps with fractions; here they are read so
too (a timestamp without a zone still is none).

5. Its Distributed Map differs from AWS's in three ways, each put right here:
   - Its ASL grammar has no ItemBatcher: CreateStateMachine fails with ASLParserException at
     "ItemBatcher". Here a Map's ItemBatcher is taken out of the definition before moto parses
     it, kept with its Map state, and applied as AWS applies it: each item read through the
     ItemSelector, then MaxItemsPerBatch of them as one child's input, {"Items": [...]}. Its
     other fields (MaxItemsPerBatchPath, MaxInputBytesPerBatch, BatchInput) are refused at
     CreateStateMachine rather than ignored. Its grammar also refuses an integer
     ToleratedFailurePercentage ("no viable alternative"); it is given to moto as a float.
   - A child execution that fails is counted and passed over: the Map succeeds whatever fails.
     AWS fails the Map Run with States.ExceedToleratedFailureThreshold when more children fail
     than ToleratedFailureCount or ToleratedFailurePercentage allow (both 0 unless given).
   - Its ItemReader reads one page of ListObjectsV2 (1,000 keys); AWS reads every page.
     (With ITEM_READER_S3_ENDPOINT_URL set, as make demo sets it for the moto that runs its
     state machines, the ItemReader lists that S3 API's buckets, where the data is.)

6. A Catch whose Next is its own state (invoke again after an error) goes to the state's Next
instead: moto takes a Next equal to the state's name for one no Catch or Choice chose. Here a
Catch's choice is kept whatever it names.

And two that change only its speed: moto's dispatcher, under one lock for every request, lists
moto's package directory and tries its few hundred URL patterns for each request to find the
service; here both answers are kept, as neither changes while the server runs. The service
model an error response is written from is looked up once per service before serving: its
first lookup lists botocore's data, and the threads of the first errors answered at once (a
test's first HEAD of a missing key, say) each did it. And the request log line werkzeug writes
for each request is off (errors are still logged). Together they took about half of moto's CPU
time under make test.

With LAMBDA_FORWARD_URL set (make demo), an invocation with no queued result goes to the real
function on that Lambda runtime emulator (cargo lambda watch) instead, so the state machine
runs the real Lambdas. A region's invocations can be sent elsewhere through moto's own config
API: {"lambda": {"forward": {"<region>": "<url>"}}} (scripts/state_machine.py,
execute_state_machines).

Usage: python scripts/moto_server.py [moto_server arguments]; set MOTO_PORT to the port, as the
Step Functions executor calls the other services through it.
"""

import datetime
import functools
import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.request

import boto3
import botocore.session
from moto import backends
from moto.core.config import default_user_config
from moto.core.utils import get_service_model, service_name_from_moto_package_name
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main
from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.catch.catcher_decl import CatcherDecl
from moto.stepfunctions.parser.asl.component.common.catch.catcher_outcome import CatcherOutcomeCaught
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.common.string.string_expression import StringJsonPath
from moto.stepfunctions.parser.asl.component.intrinsic.argument.argument import (
    ArgumentContextPath,
    ArgumentJsonPath,
)
from moto.stepfunctions.parser.asl.component.state.choice.comparison.comparison_operator_type import (
    ComparisonOperatorType,
)
from moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.is_operator import (
    IsTimestamp,
)
from moto.stepfunctions.parser.asl.component.state.choice.comparison.comparison_variable import (
    ComparisonVariable,
)
from moto.stepfunctions.parser.asl.component.state.choice.comparison.variable import NoSuchVariable
from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3 import (
    ResourceEvalS3,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
    DistributedIterationComponent,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
from moto.stepfunctions.parser.asl.component.state.state import CommonStateField
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.eval.states import ItemData, MapData
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.utils.json_path import NoSuchJsonPathError

_invoke = LambdaSimpleBackend.invoke


def _forward(url, function_name, body):
    """Invokes the function on the Lambda runtime emulator at `url` (cargo lambda watch), by its
    last name segment: ...:function:totesys-load -> load. Its error answers (HTTP 500 with the
    error payload) are returned as payloads; the check below flags them."""
    name = function_name.split(":function:")[-1].split(":")[0].rsplit("-", 1)[-1]
    request = urllib.request.Request(
        f"{url}/2015-03-31/functions/{name}/invocations",
        data=body if isinstance(body, bytes) else (body or "{}").encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        return error.read()


def _invoke_with_function_errors(self, function_name, qualifier, body, headers, response_headers):
    forward = default_user_config.get("lambda", {}).get("forward", {}).get(self.region_name)
    forward = forward or os.environ.get("LAMBDA_FORWARD_URL")
    if forward and not self.lambda_simple_results_queue:
        result = _forward(forward, function_name, body)
    else:
        result = _invoke(self, function_name, qualifier, body, headers, response_headers)
    try:
        payload = json.loads(result)
    except ValueError:
        return result
    if isinstance(payload, dict) and {"errorType", "errorMessage"} <= payload.keys():
        response_headers["x-amz-function-error"] = "Unhandled"
    return result


LambdaSimpleBackend.invoke = _invoke_with_function_errors

_models = botocore.session.get_session()


def _operation(task, service_name, action_name):
    service = _models.get_service_model(task._get_boto_service_name(service_name))
    action = task._get_boto_service_action(action_name)
    name = next(op for op in service.operation_names if task._get_boto_service_action(op) == action)
    return service.operation_model(name)


def _normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
    self._to_boto_request(parameters, _operation(self, boto_service_name, service_action_name).input_shape)


def _normalise_response(self, response, boto_service_name=None, service_action_name=None):
    self._from_boto_response(response, _operation(self, boto_service_name, service_action_name).output_shape)


StateTaskServiceAwsSdk._normalise_parameters = _normalise_parameters
StateTaskServiceAwsSdk._normalise_response = _normalise_response


class StatesRuntime(FailureEventException):
    """States.Runtime: fails the execution whatever the state's Retry and Catch say."""

    def __init__(self, env, cause):
        error = StatesErrorNameType.StatesRuntime.to_name()
        super().__init__(
            FailureEvent(
                env=env,
                error_name=StatesErrorName(typ=StatesErrorNameType.StatesRuntime),
                event_type=HistoryEventType.ExecutionFailed,
                event_details=EventDetails(
                    executionFailedEventDetails=ExecutionFailedEventDetails(error=error, cause=cause)
                ),
            )
        )


class _PastRetryAndCatch(BaseException):
    """Carries a StatesRuntime past ExecutionState._eval_state's `except Exception`, which would
    hand it to the state's Retry and Catch."""

    def __init__(self, error):
        self.error = error


def _not_found(path, env):
    return f"The JSONPath '{path}' specified for the field '{env.next_field_name}' could not be found in the input"


_string_json_path = StringJsonPath._eval_body


def _string_json_path_or_runtime(self, env):
    try:
        _string_json_path(self, env)
    except NoSuchJsonPathError as error:
        raise StatesRuntime(env, _not_found(error.json_path, env)) from None


def _argument_or_runtime(original):
    def evaluate(self, env):
        try:
            return original(self, env)
        except NoSuchJsonPathError as error:
            raise StatesRuntime(env, _not_found(error.json_path, env)) from None

    return evaluate


def _comparison_variable_or_runtime(self, env):
    # ComparisonVariable._eval_body, but for the check.
    self.variable.eval(env)
    missing = env.stack[-1]
    if isinstance(missing, NoSuchVariable) and self.comparison_function.operator_type != ComparisonOperatorType.IsPresent:
        raise StatesRuntime(env, f"Invalid path {missing.path}: the Choice state's Variable was not found")
    self.comparison_function.eval(env)


_evaluate_with_timeout = ExecutionState._evaluate_with_timeout
_eval_state = ExecutionState._eval_state


def _evaluate_past_retry_and_catch(self, env):
    try:
        _evaluate_with_timeout(self, env)
    except StatesRuntime as error:
        raise _PastRetryAndCatch(error) from None


def _eval_state_failing_on_runtime_errors(self, env):
    try:
        _eval_state(self, env)
    except _PastRetryAndCatch as escape:
        raise escape.error from None


StringJsonPath._eval_body = _string_json_path_or_runtime
ArgumentJsonPath._eval_argument = _argument_or_runtime(ArgumentJsonPath._eval_argument)
ArgumentContextPath._eval_argument = _argument_or_runtime(ArgumentContextPath._eval_argument)
ComparisonVariable._eval_body = _comparison_variable_or_runtime
ExecutionState._evaluate_with_timeout = _evaluate_past_retry_and_catch
ExecutionState._eval_state = _eval_state_failing_on_runtime_errors

def _rfc3339(string):
    try:
        stamp = datetime.datetime.fromisoformat(string)
    except (TypeError, ValueError):
        return None
    return stamp if stamp.tzinfo is not None else None


IsTimestamp.string_to_timestamp = staticmethod(_rfc3339)


_parse = AmazonStateLanguageParser.parse
# The ItemBatchers of the definition being parsed, by Map state name, for StateMap to take.
_parsing = threading.local()


def _take_batchers(states, batchers):
    """Takes the ItemBatcher out of each Map state in `states` and those nested in it, and
    makes an integer ToleratedFailurePercentage a float. True when it changed something."""
    changed = False
    for name, state in states.items():
        if not isinstance(state, dict):
            continue
        if state.get("Type") == "Map":
            if isinstance(state.get("ToleratedFailurePercentage"), int):
                state["ToleratedFailurePercentage"] = float(state["ToleratedFailurePercentage"])
                changed = True
            if "ItemBatcher" in state:
                batcher = state.pop("ItemBatcher")
                unsupported = sorted(set(batcher) - {"MaxItemsPerBatch"})
                if unsupported or not isinstance(batcher.get("MaxItemsPerBatch"), int):
                    raise ValueError(f"ItemBatcher of {name}: only MaxItemsPerBatch is emulated, not {unsupported}")
                if name in batchers:
                    raise ValueError(f"two Map states named {name} with an ItemBatcher")
                batchers[name] = batcher["MaxItemsPerBatch"]
                changed = True
        for inner in [state.get("ItemProcessor"), state.get("Iterator"), *state.get("Branches", [])]:
            if isinstance(inner, dict):
                changed |= _take_batchers(inner.get("States", {}), batchers)
    return changed


def _parse_with_batchers(definition):
    try:
        document = json.loads(definition)
    except ValueError:
        return _parse(definition)
    batchers = {}
    if not _take_batchers(document.get("States", {}), batchers):
        return _parse(definition)
    _parsing.batchers = batchers
    try:
        return _parse(json.dumps(document))
    finally:
        _parsing.batchers = {}


_from_state_props = StateMap.from_state_props


def _from_state_props_with_batcher(self, state_props):
    _from_state_props(self, state_props)
    self.iteration_component.items_per_batch = getattr(_parsing, "batchers", {}).get(self.name)


def _selected(env, selector, index, item):
    """The item as the Map's ItemSelector makes it, as the Map's workers read it: over the
    Map's input with $$.Map.Item set."""
    if selector is None:
        return item
    frame = env.open_inner_frame()
    try:
        frame.states.context_object.context_object_data["Map"] = MapData(Item=ItemData(Index=index, Value=item))
        frame.states.reset(input_value=env.stack[-1])
        frame.stack.append(env.stack[-1])
        selector.eval(frame)
        return frame.stack.pop()
    finally:
        env.delete_frame(frame)


_map_run = DistributedIterationComponent._map_run


def _map_run_in_batches(self, env, eval_input):
    size = getattr(self, "items_per_batch", None)
    if size is None:
        return _map_run(self, env, eval_input)
    items = env.stack.pop()
    selector = eval_input.item_selector
    selected = [_selected(env, selector, index, item) for index, item in enumerate(items)]
    env.stack.append([{"Items": selected[start:start + size]} for start in range(0, len(selected), size)])
    # The workers take each batch as it is: the ItemSelector has been applied to its items.
    eval_input.item_selector = None
    try:
        _map_run(self, env, eval_input)
    finally:
        eval_input.item_selector = selector


def _map_run_within_tolerance(self, env, eval_input):
    _map_run_in_batches(self, env, eval_input)
    items = eval_input.map_run_record.item_counter
    failed, total = items.failed.get() + items.timed_out.get(), items.total.get()
    if failed > eval_input.tolerated_failure_count or (
        total and 100 * failed / total > eval_input.tolerated_failure_percentage
    ):
        error = StatesErrorNameType.StatesExceedToleratedFailureThreshold
        raise FailureEventException(
            FailureEvent(
                env=env,
                error_name=StatesErrorName(typ=error),
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(
                    mapRunFailedEventDetails=MapRunFailedEventDetails(
                        error=error.to_name(),
                        cause=f"{failed} of {total} child executions failed, more than the Map tolerates",
                    )
                ),
            )
        )


def _list_every_page(env, resource_runtime_part, state_credentials):
    if endpoint := os.environ.get("ITEM_READER_S3_ENDPOINT_URL"):
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=resource_runtime_part.region,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    else:
        s3 = ResourceEvalS3._get_s3_client(resource_runtime_part=resource_runtime_part,
                                           state_credentials=state_credentials)
    parameters = env.stack.pop()
    contents = []
    for page in s3.get_paginator("list_objects_v2").paginate(**parameters):
        contents.extend(page.get("Contents", []))
    env.stack.append(contents)


_catcher_eval_body = CatcherDecl._eval_body
_set_next = CommonStateField._set_next


def _catcher_eval_body_noting_next(self, env):
    _catcher_eval_body(self, env)
    if isinstance(env.stack[-1], CatcherOutcomeCaught):
        env.caught_next = self.next_decl.name


def _set_next_after_catch(self, env):
    if getattr(env, "caught_next", None) is not None:
        env.next_state_name, env.caught_next = env.caught_next, None
        return
    _set_next(self, env)


CatcherDecl._eval_body = _catcher_eval_body_noting_next
CommonStateField._set_next = _set_next_after_catch
AmazonStateLanguageParser.parse = staticmethod(_parse_with_batchers)
StateMap.from_state_props = _from_state_props_with_batcher
DistributedIterationComponent._map_run = _map_run_within_tolerance
ResourceEvalS3._handle_list_objects_v2 = staticmethod(_list_every_page)

_modules = backends.list_of_moto_modules
backends.list_of_moto_modules = functools.cache(lambda: tuple(_modules()))
_backend_for_host = DomainDispatcherApplication.get_backend_for_host
_backends_by_host = {}


def _cached_backend_for_host(self, host):
    if host not in _backends_by_host:
        _backends_by_host[host] = _backend_for_host(self, host)
    return _backends_by_host[host]


DomainDispatcherApplication.get_backend_for_host = _cached_backend_for_host
logging.getLogger("werkzeug").setLevel(logging.WARNING)

if __name__ == "__main__":
    for package in ("s3", "secretsmanager", "stepfunctions", "dynamodb", "sns", "sqs"):
        get_service_model(service_name_from_moto_package_name(package))
    sys.exit(main())
