"""Starts moto's server (S3, Secrets Manager, and Step Functions with the Lambda, DynamoDB and
SNS services its states call) for the tests and the demo.

Two changes to moto, each making it behave as AWS does:

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

With LAMBDA_FORWARD_URL set (make demo), an invocation with no queued result goes to the real
function on that Lambda runtime emulator (cargo lambda watch) instead, so the state machine
runs the real Lambdas.

Usage: python scripts/moto_server.py [moto_server arguments]; set MOTO_PORT to the port, as the
Step Functions executor calls the other services through it.
"""

import json
import os
import sys
import urllib.error
import urllib.request

import botocore.session
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.server import main
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk,
)

_invoke = LambdaSimpleBackend.invoke


def _forward(function_name, body):
    """Invokes the function on the Lambda runtime emulator at $LAMBDA_FORWARD_URL (cargo lambda
    watch), by its last name segment: ...:function:totesys-load -> load. Its error answers
    (HTTP 500 with the error payload) are returned as payloads; the check below flags them."""
    name = function_name.split(":function:")[-1].split(":")[0].rsplit("-", 1)[-1]
    request = urllib.request.Request(
        f"{os.environ['LAMBDA_FORWARD_URL']}/2015-03-31/functions/{name}/invocations",
        data=body if isinstance(body, bytes) else (body or "{}").encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=900) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        return error.read()


def _invoke_with_function_errors(self, function_name, qualifier, body, headers, response_headers):
    if os.environ.get("LAMBDA_FORWARD_URL") and not self.lambda_simple_results_queue:
        result = _forward(function_name, body)
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

if __name__ == "__main__":
    sys.exit(main())
