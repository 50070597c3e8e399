"""The state machine definition (terraform/state_machine.asl.json) executed by moto's Step
Functions interpreter, with canned Lambda results (moto's lambda-simple backend, see
scripts/moto_server.py) and moto's DynamoDB, SNS and SQS: the happy path, the skips, retries of
transient errors, permanent errors caught and notified with the input that finishes the run, a
failed table not holding back the others, the lock against overlapping runs, and the failure
paths guarded against what AWS fails with States.Runtime (a path that finds nothing), which
scripts/moto_server.py makes moto raise as AWS does.

Needs AWS_ENDPOINT_URL pointing at scripts/moto_server.py (scripts/env.sh starts it). It resets
that moto first: run it after, not beside, tests that keep state there (make test does).
"""

import json
import sys
import time
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from asl_render import render, values  # noqa: E402
from state_machine import ACCOUNT, StateMachine, execute_state_machines, invocations, moto_api  # noqa: E402

TRANSIENT = ["TransientDatabaseError", "TransientStorageError", "TransientSecretError"]
# Each test runs in a region of its own: moto keeps one queue of canned Lambda results per
# account and region, and results a failed test left behind must not reach another test.
_regions = iter(boto3.session.Session().get_available_regions("stepfunctions"))


def lambda_error(error_type, message):
    return {"errorType": error_type, "errorMessage": message}


class Pipeline(StateMachine):
    """The state machine over tables sales_order and payment, one at a time so that canned
    results meet the invocations in order, with short retry intervals."""

    def __init__(self, start_at=None, **settings):
        super().__init__(next(_regions), start_at=start_at, **settings)

    def hold_lock(self, owner):
        self.dynamodb.put_item(
            TableName=self.lock_table, Item={"lock_id": {"S": "pipeline"}, "owner": {"S": owner}}
        )

    def queue_results(self, *results):
        moto_api(
            "static/lambda-simple/response",
            {
                "account_id": ACCOUNT,
                "region": self.region,
                "results": [json.dumps(r) for r in results],
            },
        )


def ingest_output(table, rows, left=False, at="094000123456"):
    """An ingest output; `left`: the invocation reached its deadline with the table unread."""
    files = {table: [f"{table}/2024/11/14/{at}.parquet"]} if rows else {}
    return {
        "bucket": "totesys-ingest",
        "files": files,
        "row_counts": {table: rows},
        "has_new_data": rows > 0,
        "complete": not left,
        "remaining": {"tables_to_query": [table]} if left else None,
    }


def transform_output(at="094000123456", left=None):
    """A transform output; `left`: the raw files it did not reach (a transform event)."""
    return {
        "bucket": "totesys-processed",
        "files": {"fact_sales_order": [f"fact_sales_order/2024/11/14/{at}.parquet"]},
        "row_counts": {"fact_sales_order": 20},
        "quarantined": {},
        "has_new_data": True,
        "complete": left is None,
        "remaining": left,
    }


def load_output(left=None):
    """A load output; `left`: the files it did not reach (a load event)."""
    return {
        "loaded": {"fact_sales_order": 20},
        "skipped_files": [],
        "complete": left is None,
        "remaining": left,
    }


def map_results(*outputs):
    """Transform's event as the state machine builds it: the two Maps' results as they are,
    the dimension tables' (none in these tests' machine) and the fact tables'."""
    return [[], [{"output": o, "failed": False} for o in outputs]]


TRANSFORM_OUTPUT = transform_output()
LOAD_OUTPUT = load_output()
# Transform finding no raw file after its cursor and nothing queued for the load.
NOTHING = {**TRANSFORM_OUTPUT, "files": {}, "row_counts": {}, "has_new_data": False}


def resume_input(notification):
    """The input the failure message asks to start an execution with."""
    return json.loads(notification["Message"].rsplit("): ", 1)[1])


@pytest.fixture(scope="module", autouse=True)
def clean_moto_executing_state_machines():
    # No canned results left by an earlier run against the same server.
    moto_api("reset", {})
    execute_state_machines()


def test_happy_path_passes_each_output_on():
    p = Pipeline()
    sales, payments = ingest_output("sales_order", 20), ingest_output("payment", 0)
    p.queue_results(sales, payments, TRANSFORM_OUTPUT, LOAD_OUTPUT)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"])["load"]["Payload"] == LOAD_OUTPUT
    assert invocations(history) == [
        ("ingest", {"tables_to_query": ["sales_order"]}),
        ("ingest", {"tables_to_query": ["payment"]}),
        ("transform", map_results(sales, payments)),
        ("load", TRANSFORM_OUTPUT),
    ]
    assert p.lock_item() is None, "the lock is released"
    assert p.notifications() == []


def test_no_new_data_still_runs_transform_and_skips_load_when_nothing_waits():
    p = Pipeline()
    p.queue_results(ingest_output("sales_order", 0), ingest_output("payment", 0), NOTHING)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"])["skipped"] == "transform wrote no files"
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform"]
    assert p.lock_item() is None


def test_files_a_lost_result_left_are_transformed_and_loaded_in_a_run_with_no_new_data():
    # Transform takes every raw file after its cursor, whatever ingest reported.
    p = Pipeline()
    p.queue_results(ingest_output("sales_order", 0), ingest_output("payment", 0), TRANSFORM_OUTPUT, LOAD_OUTPUT)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform", "load"]
    assert json.loads(execution["output"])["load"]["Payload"] == LOAD_OUTPUT


def test_transform_writing_nothing_skips_load():
    p = Pipeline()
    p.queue_results(ingest_output("sales_order", 3), ingest_output("payment", 0), NOTHING)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert json.loads(execution["output"])["skipped"] == "transform wrote no files"
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform"]


@pytest.mark.parametrize("error_type", TRANSIENT)
def test_a_transient_ingest_error_is_retried_then_succeeds(error_type):
    p = Pipeline()
    sales = ingest_output("sales_order", 20)
    p.queue_results(
        lambda_error(error_type, "connection reset"),
        sales,
        ingest_output("payment", 0),
        TRANSFORM_OUTPUT,
        LOAD_OUTPUT,
    )
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert [f for f, _ in invocations(history)] == ["ingest"] * 3 + ["transform", "load"]
    failed = [e["taskFailedEventDetails"]["error"] for e in history if e["type"] == "TaskFailed"]
    assert failed == [error_type]
    assert json.loads(execution["output"])["load"]["Payload"] == LOAD_OUTPUT


def test_a_missing_dimension_in_load_is_retried_then_succeeds():
    p = Pipeline()
    p.queue_results(
        ingest_output("sales_order", 20),
        ingest_output("payment", 0),
        TRANSFORM_OUTPUT,
        lambda_error("MissingDimension", "dim_staff row 7 is not loaded yet"),
        LOAD_OUTPUT,
    )
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform", "load", "load"]


def test_transient_errors_that_persist_fail_after_the_last_attempt():
    p = Pipeline()
    p.queue_results(
        ingest_output("sales_order", 20),
        ingest_output("payment", 0),
        *[lambda_error("TransientStorageError", "S3 503 Slow Down")] * 3,
    )
    execution, history = p.run()
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "TransientStorageError"
    # MaxAttempts 2: the first try and two retries.
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest"] + ["transform"] * 3
    [notification] = p.notifications()
    assert p.lock_item() is None
    # The message says how to finish the run: transform and load the files it ingested.
    resume = resume_input(notification)
    assert resume == {"resume_transform": map_results(ingest_output("sales_order", 20), ingest_output("payment", 0))}
    p.queue_results(TRANSFORM_OUTPUT, LOAD_OUTPUT)
    execution, history = p.run(input=resume)
    assert execution["status"] == "SUCCEEDED", execution
    assert invocations(history) == [("transform", resume["resume_transform"]), ("load", TRANSFORM_OUTPUT)]
    assert json.loads(execution["output"])["load"]["Payload"] == LOAD_OUTPUT


def test_a_permanent_error_is_not_retried_and_is_notified():
    p = Pipeline()
    message = "fact_sales_order/2024/11/14/094000123456.parquet: column units_sold: expected Int32"
    p.queue_results(
        ingest_output("sales_order", 20),
        ingest_output("payment", 0),
        lambda_error("InvalidInput", message),
    )
    execution, history = p.run()
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "InvalidInput"
    assert message in execution["cause"]
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform"]
    [notification] = p.notifications()
    assert notification["Subject"] == "totesys pipeline failed"
    assert "InvalidInput" in notification["Message"] and message in notification["Message"]
    assert execution["executionArn"] in notification["Message"]
    assert p.lock_item() is None, "a failed run releases the lock"


def test_a_table_that_fails_does_not_hold_back_the_others():
    p = Pipeline()
    sales = ingest_output("sales_order", 20)
    p.queue_results(
        sales,
        lambda_error("SourceSchemaMismatch", "payment.amount: expected numeric"),
        TRANSFORM_OUTPUT,
        LOAD_OUTPUT,
    )
    execution, history = p.run()
    # The sales orders are transformed and loaded; then the run fails and says which table.
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform", "load"]
    [dimensions, [ok, failed]] = invocations(history)[2][1]
    assert (dimensions, ok) == ([], {"output": sales, "failed": False})
    assert failed["failed"] and failed["table"] == "payment", failed
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "SourceSchemaMismatch"
    assert "payment.amount" in execution["cause"]
    [notification] = p.notifications()
    assert "SourceSchemaMismatch" in notification["Message"]
    # Nothing to resume: the failed table kept its watermark, the next run reads it again.
    assert resume_input(notification) == {}
    assert p.lock_item() is None


def test_a_failed_load_is_finished_by_the_input_its_message_gives():
    p = Pipeline()
    p.queue_results(
        ingest_output("sales_order", 20),
        ingest_output("payment", 0),
        TRANSFORM_OUTPUT,
        lambda_error("Configuration", "warehouse: table dim_date is missing"),
    )
    execution, history = p.run()
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "Configuration"
    [notification] = p.notifications()
    resume = resume_input(notification)
    assert resume == {"resume_load": TRANSFORM_OUTPUT, "then_transform": None}
    p.queue_results(LOAD_OUTPUT)
    execution, history = p.run(input=resume)
    assert execution["status"] == "SUCCEEDED", execution
    assert invocations(history) == [("load", TRANSFORM_OUTPUT)]
    assert json.loads(execution["output"])["load"]["Payload"] == LOAD_OUTPUT
    assert p.lock_item() is None


def test_each_stage_is_invoked_again_until_it_reports_complete():
    """A backfill: ingest, transform and load each reach their deadline and say what is left;
    the files left are loaded before the raw files left are transformed, and those before
    ingest goes on in another round."""
    p = Pipeline()
    sales = ingest_output("sales_order", 20, left=True, at="090000000000")
    payments = ingest_output("payment", 3)
    raw_left = {"bucket": "totesys-ingest", "files": {"sales_order": ["sales_order/2024/11/14/091000000000.parquet"]}}
    first = transform_output(at="090000000000", left=raw_left)
    processed_left = {"bucket": "totesys-processed", "files": {"fact_sales_order": ["fact_sales_order/2024/11/14/090000000000.parquet"]}}
    second = transform_output(at="091000000000")
    sales_2, payments_2 = ingest_output("sales_order", 20, at="094000123456"), ingest_output("payment", 0)
    third = transform_output()
    p.queue_results(
        sales, payments,
        first, load_output(left=processed_left), LOAD_OUTPUT,
        second, LOAD_OUTPUT,
        sales_2, payments_2,
        third, LOAD_OUTPUT,
    )
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert invocations(history) == [
        ("ingest", {"tables_to_query": ["sales_order"]}),
        ("ingest", {"tables_to_query": ["payment"]}),
        ("transform", map_results(sales, payments)),
        ("load", first),
        ("load", processed_left),
        ("transform", raw_left),
        ("load", second),
        ("ingest", {"tables_to_query": ["sales_order"]}),
        ("ingest", {"tables_to_query": ["payment"]}),
        ("transform", map_results(sales_2, payments_2)),
        ("load", third),
    ]
    assert p.lock_item() is None
    assert p.notifications() == []


def test_a_load_failing_mid_loop_is_resumed_with_the_files_and_raw_files_left():
    p = Pipeline()
    raw_left = {"bucket": "totesys-ingest", "files": {"sales_order": ["sales_order/2024/11/14/091000000000.parquet"]}}
    first = transform_output(at="090000000000", left=raw_left)
    processed_left = {"bucket": "totesys-processed", "files": {"fact_sales_order": ["fact_sales_order/2024/11/14/090000000000.parquet"]}}
    p.queue_results(
        ingest_output("sales_order", 20),
        ingest_output("payment", 0),
        first,
        load_output(left=processed_left),
        lambda_error("InvalidInput", "fact_sales_order: s3://totesys-processed/...: corrupt"),
    )
    execution, _ = p.run()
    assert execution["status"] == "FAILED", execution
    [notification] = p.notifications()
    resume = resume_input(notification)
    assert resume == {"resume_load": processed_left, "then_transform": raw_left}
    second = transform_output(at="091000000000")
    p.queue_results(LOAD_OUTPUT, second, LOAD_OUTPUT)
    execution, history = p.run(input=resume)
    assert execution["status"] == "SUCCEEDED", execution
    assert invocations(history) == [
        ("load", processed_left),
        ("transform", raw_left),
        ("load", second),
    ]
    assert p.lock_item() is None


def test_the_fact_tables_are_ingested_after_the_dimension_tables():
    # In the order of the variable, sales_order would come first; one at a time, as the
    # canned results are queued.
    p = Pipeline(tables=["sales_order", "staff", "payment", "currency"])
    staff, currency = ingest_output("staff", 2), ingest_output("currency", 0)
    sales, payments = ingest_output("sales_order", 20), ingest_output("payment", 0)
    p.queue_results(staff, currency, sales, payments, TRANSFORM_OUTPUT, LOAD_OUTPUT)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    ok = lambda o: {"output": o, "failed": False}  # noqa: E731
    assert invocations(history) == [
        ("ingest", {"tables_to_query": ["staff"]}),
        ("ingest", {"tables_to_query": ["currency"]}),
        ("ingest", {"tables_to_query": ["sales_order"]}),
        ("ingest", {"tables_to_query": ["payment"]}),
        ("transform", [[ok(staff), ok(currency)], [ok(sales), ok(payments)]]),
        ("load", TRANSFORM_OUTPUT),
    ]


def test_a_dimension_table_that_fails_fails_the_run_with_its_error():
    # Two dimension tables: moto's JSONPath gives a lone match of `[*]` as a value, not a list
    # of one, which no intrinsic function takes.
    p = Pipeline(tables=["staff", "currency", "sales_order", "payment"])
    p.queue_results(
        lambda_error("InvalidSourceData", "table staff, column created_at: infinite timestamp"),
        ingest_output("currency", 0),
        ingest_output("sales_order", 20),
        ingest_output("payment", 0),
        TRANSFORM_OUTPUT,
        LOAD_OUTPUT,
    )
    execution, history = p.run()
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "InvalidSourceData", execution
    assert "table staff" in execution["cause"]
    assert [f for f, _ in invocations(history)] == ["ingest"] * 4 + ["transform", "load"]
    assert p.lock_item() is None


def test_a_run_while_another_holds_the_lock_does_nothing():
    p = Pipeline()
    # Another execution that is still running holds the lock.
    waiter = p.sfn.create_state_machine(
        name=f"waiter-{int(time.time() * 1e6)}",
        definition=json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 30, "End": True}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/totesys-pipeline",
    )["stateMachineArn"]
    running = p.sfn.start_execution(stateMachineArn=waiter, name="holder")["executionArn"]
    p.dynamodb.put_item(
        TableName=p.lock_table, Item={"lock_id": {"S": "pipeline"}, "owner": {"S": running}}
    )
    try:
        execution, history = p.run()
        assert execution["status"] == "SUCCEEDED", (execution, history)
        output = json.loads(execution["output"])
        assert output == {"skipped": "another execution holds the lock", "lock_owner": running}
        assert invocations(history) == []
        assert p.lock_item()["owner"]["S"] == running, "the holder keeps its lock"
    finally:
        p.sfn.stop_execution(executionArn=running)


def test_a_lock_left_by_an_execution_that_ended_is_taken_over():
    p = Pipeline()
    p.queue_results(ingest_output("sales_order", 0), ingest_output("payment", 0), NOTHING)
    # A run that timed out or was aborted never released its lock.
    finished, _ = p.run(name="ended-without-releasing")
    p.dynamodb.put_item(
        TableName=p.lock_table,
        Item={"lock_id": {"S": "pipeline"}, "owner": {"S": finished["executionArn"]}},
    )
    p.queue_results(ingest_output("sales_order", 0), ingest_output("payment", 0), NOTHING)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform"]
    assert p.lock_item() is None


def test_a_lock_item_without_owner_fails_notified_and_is_left_alone():
    p = Pipeline()
    # A lock item without an owner (written by hand, say): no owner to ask about.
    p.dynamodb.put_item(TableName=p.lock_table, Item={"lock_id": {"S": "pipeline"}})
    execution, history = p.run()
    assert execution["status"] == "FAILED", execution
    assert execution["error"] == "LockItemWithoutOwner"
    assert f"The lock item in {p.lock_table} has no owner" in execution["cause"]
    assert invocations(history) == []
    [notification] = p.notifications()
    assert "LockItemWithoutOwner" in notification["Message"]
    assert p.lock_item() == {"lock_id": {"S": "pipeline"}}, "not this execution's to release"


def test_a_lock_released_before_its_owner_is_read_is_acquired_again():
    # AcquireLock found the lock held; its owner released it before ReadLockOwner read it. On
    # AWS a path into the missing item fails the execution (States.Runtime) with the lock
    # free and nothing notified; instead the run tries to acquire it again.
    p = Pipeline(start_at="ReadLockOwner")
    p.queue_results(ingest_output("sales_order", 0), ingest_output("payment", 0), NOTHING)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", (execution, history)
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform"]
    assert p.lock_item() is None
    assert p.notifications() == []


def test_a_redriven_lock_owner_keeps_its_lock():
    # A failed execution that is redriven reports PENDING_REDRIVE until it runs again.
    p = Pipeline(start_at="IsLockOwnerRunning")
    owner = p.execution_arn("redriven")
    p.hold_lock(owner)
    execution, history = p.run(input={"lock": {"owner": owner, "owner_status": {"status": "PENDING_REDRIVE"}}})
    assert execution["status"] == "SUCCEEDED", (execution, history)
    assert json.loads(execution["output"]) == {"skipped": "another execution holds the lock", "lock_owner": owner}
    assert invocations(history) == []
    assert p.lock_item()["owner"]["S"] == owner


@pytest.mark.parametrize(
    "error, notified, failed_with",
    [
        # States.Timeout and others can come without a Cause.
        ({"Error": "States.Timeout"}, "States.Timeout: no cause was given", "PipelineFailed"),
        ({"Error": "InvalidInput"}, "InvalidInput: no cause was given", "InvalidInput"),
        ({"Cause": "no name"}, 'PipelineFailed: {"Cause":"no name"}', "PipelineFailed"),
    ],
)
def test_an_error_without_cause_or_name_is_still_notified_and_releases_the_lock(error, notified, failed_with):
    # Every failure path passes RunFailed (or its like) with $.error from a Catch; the message
    # and the Fail states read $.error.Error and $.error.Cause, which AWS does not always give.
    p = Pipeline(start_at="RunFailed")
    p.hold_lock(p.execution_arn("failing"))
    execution, history = p.run(name="failing", input={"error": error})
    assert execution["status"] == "FAILED", (execution, history)
    assert execution["error"] == failed_with
    [notification] = p.notifications()
    assert f"failed with {notified}." in notification["Message"]
    assert p.lock_item() is None, "the failed run releases its lock"


def test_no_resource_names_a_partition_of_its_own():
    # GovCloud and China are partitions of their own: every ARN comes from sfn.tf's partition.
    definition = render(values("aws-us-gov", "us-gov-west-1"))
    assert "arn:aws:" not in definition
    assert "arn:aws-us-gov:states:::lambda:invoke" in definition


def test_a_lock_held_by_the_etl_command_skips_the_run_until_it_expires():
    # etl replay / rebuild-snapshots hold the lock while they move the pipeline's state.
    p = Pipeline()
    owner = "etl:replay by ops at 2026-12-03T10:00:00.000Z"
    item = {"lock_id": {"S": "pipeline"}, "owner": {"S": owner}, "expires_at": {"S": "2999-01-01T00:00:00.000Z"}}
    p.dynamodb.put_item(TableName=p.lock_table, Item=item)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", (execution, history)
    assert json.loads(execution["output"]) == {"skipped": "another execution holds the lock", "lock_owner": owner}
    assert invocations(history) == []
    assert p.lock_item() == item, "the command keeps its lock"
    assert p.notifications() == []

    # The command died holding it: once expired, the next run takes it over and runs.
    expired = {**item, "expires_at": {"S": "2020-01-01T00:00:00.000Z"}}
    p.dynamodb.put_item(TableName=p.lock_table, Item=expired)
    p.queue_results(ingest_output("sales_order", 0), ingest_output("payment", 0), NOTHING)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", (execution, history)
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform"]
    assert p.lock_item() is None, "released at the end of the run"


def test_an_execution_near_the_history_limit_hands_over_to_a_fresh_one():
    """A backfill of many rounds: past the history budget (here one round's worth) the
    execution releases the lock, starts a fresh execution and succeeds; the fresh one takes
    the lock and goes on with the next round from durable state."""
    p = Pipeline(history_budget=60)
    sales = ingest_output("sales_order", 20, left=True, at="090000000000")
    payments = ingest_output("payment", 3)
    sales_2, payments_2 = ingest_output("sales_order", 20), ingest_output("payment", 0)
    p.queue_results(sales, payments, TRANSFORM_OUTPUT, LOAD_OUTPUT,
                    sales_2, payments_2, TRANSFORM_OUTPUT, LOAD_OUTPUT)
    execution, history = p.run()
    assert execution["status"] == "SUCCEEDED", execution
    assert [f for f, _ in invocations(history)] == ["ingest", "ingest", "transform", "load"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    assert entered[-3:] == ["ContinueAsNew", "ReleaseLockForContinuation", "StartContinuation"], entered
    # The continuation: started by the first, with the lock the first released.
    deadline = time.monotonic() + 60
    while True:
        others = [e for e in p.sfn.list_executions(stateMachineArn=p.arn)["executions"]
                  if e["executionArn"] != execution["executionArn"]]
        if others and others[0]["status"] != "RUNNING":
            break
        assert time.monotonic() < deadline, "no continuation ended"
        time.sleep(0.2)
    [continuation] = others
    assert continuation["status"] == "SUCCEEDED", continuation
    described = p.sfn.describe_execution(executionArn=continuation["executionArn"])
    assert json.loads(described["input"]) == {"continued_from": execution["executionArn"]}
    second = p.sfn.get_execution_history(executionArn=continuation["executionArn"], maxResults=1000)["events"]
    assert invocations(second) == [
        ("ingest", {"tables_to_query": ["sales_order"]}),
        ("ingest", {"tables_to_query": ["payment"]}),
        ("transform", map_results(sales_2, payments_2)),
        ("load", TRANSFORM_OUTPUT),
    ]
    assert p.lock_item() is None
    assert p.notifications() == []
