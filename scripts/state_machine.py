"""The pipeline's state machine (terraform/state_machine.asl.json) deployed into moto's Step
Functions, for the state machine tests and make demo: rendered as templatefile() renders it,
with its lock table and alarm topic, an SQS queue subscribed to the topic to read what it
sends, and executions run to their end.

Needs AWS_ENDPOINT_URL pointing at scripts/moto_server.py, configured to execute state machines
with the Docker-free Lambda (see execute_state_machines).
"""

import json
import os
import time
import urllib.request
import uuid
from pathlib import Path

import boto3

from asl_render import ACCOUNT, render, values

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]


def moto_api(path, body):
    request = urllib.request.Request(
        f"{ENDPOINT}/moto-api/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def execute_state_machines(forward=None):
    """Makes moto execute state machines, their Lambda tasks answered by the results queued
    for them or, in the regions of `forward` ({region: url}), by the Lambda invoke API at that
    url (scripts/moto_server.py)."""
    moto_api("config", {"stepfunctions": {"execute_state_machine": True},
                        "lambda": {"use_docker": False, "forward": forward or {}}})


class StateMachine:
    """One deployed copy of the state machine, in `region`. `settings` override the template
    values (tables, retry timings, ...). `start_at` starts executions at that state instead of
    the first, to reach a state with an input no earlier state would give it."""

    def __init__(self, region, start_at=None, **settings):
        self._connect(region)
        suffix = f"{int(time.time() * 1e6)}"
        self.lock_table = f"totesys-lock-{suffix}"
        self.dynamodb.create_table(
            TableName=self.lock_table,
            AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.topic_arn = self.sns.create_topic(Name=f"totesys-alarms-{suffix}")["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName=f"totesys-alarms-{suffix}")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        defaults = {
            "lock_table": self.lock_table,
            "topic_arn": self.topic_arn,
            "tables": ["sales_order", "payment"],
            "map_concurrency": 1,
            "execution_timeout_seconds": 600,
            "transient_interval_seconds": 1,
            "transient_max_attempts": 2,
            "transient_backoff_rate": 1,
            "missing_dimension_interval_seconds": 1,
            "missing_dimension_max_attempts": 2,
            "missing_dimension_backoff_rate": 1,
        }
        definition = json.loads(render(values("aws", region, **{**defaults, **settings})))
        definition["StartAt"] = start_at or definition["StartAt"]
        # What the skipped first state (StartCounting) would have set.
        self.first_input = {"events": {"n": 0}} if start_at else {}
        self.name = f"totesys-pipeline-{suffix}"
        self.arn = self.sfn.create_state_machine(
            name=self.name,
            definition=json.dumps(definition),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/totesys-pipeline",
        )["stateMachineArn"]

    def _connect(self, region):
        self.region = region
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        client = lambda service: session.client(service, endpoint_url=ENDPOINT)
        self.sfn, self.dynamodb, self.sns, self.sqs = (
            client(s) for s in ("stepfunctions", "dynamodb", "sns", "sqs")
        )

    def save(self, path):
        """Writes what attach() needs to reach this state machine from another process."""
        Path(path).write_text(json.dumps({"region": self.region, "arn": self.arn,
                                          "lock_table": self.lock_table, "queue_url": self.queue_url}))

    @classmethod
    def attach(cls, path):
        saved = json.loads(Path(path).read_text())
        machine = cls.__new__(cls)
        machine._connect(saved["region"])
        machine.arn, machine.lock_table, machine.queue_url = saved["arn"], saved["lock_table"], saved["queue_url"]
        return machine

    def execution_arn(self, name):
        return f"arn:aws:states:{self.region}:{ACCOUNT}:execution:{self.name}:{name}"

    def run(self, name=None, input=None, timeout=120):
        """Starts an execution and waits for its end: (DescribeExecution, history events)."""
        # Named always: moto names an unnamed execution "None", the same every time.
        name = name or f"run-{uuid.uuid4()}"
        arn = self.sfn.start_execution(
            stateMachineArn=self.arn, name=name,
            input=json.dumps({**getattr(self, "first_input", {}), **(input or {})})
        )["executionArn"]
        execution = ended(self.sfn, arn, timeout)
        history = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        return execution, history

    def lock_item(self):
        return self.dynamodb.get_item(
            TableName=self.lock_table, Key={"lock_id": {"S": "pipeline"}}, ConsistentRead=True
        ).get("Item")

    def notifications(self):
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


def ended(sfn, execution_arn, timeout):
    """DescribeExecution of the execution once it is no longer RUNNING; fails after `timeout`
    seconds."""
    deadline = time.monotonic() + timeout
    while (execution := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, f"the execution did not finish in {timeout} s"
        time.sleep(0.2)
    return execution


def invocations(history):
    """(function, payload) of every Lambda task the execution scheduled, in order."""
    calls = []
    for event in history:
        details = event.get("taskScheduledEventDetails")
        if details and details["resourceType"] == "lambda":
            parameters = json.loads(details["parameters"])
            calls.append((parameters["FunctionName"].rsplit("-", 1)[1], parameters["Payload"]))
    return calls

