"""The pipeline's state machine (terraform/state_machine.asl.json) deployed into moto's Step
Functions, for the state machine tests and make demo: rendered as templatefile() renders it,
with its lock table and alarm topic, an SQS queue subscribed to the topic to read what it
sends, and executions run to their end.

Needs AWS_ENDPOINT_URL pointing at scripts/moto_server.py, configured to execute state machines
with the Docker-free Lambda (see execute_state_machines).
"""

import json
import os
import re
import time
import urllib.request
import uuid
from pathlib import Path

import boto3

ENDPOINT = os.environ["AWS_ENDPOINT_URL"]
ACCOUNT = "123456789012"
TEMPLATE = Path(__file__).resolve().parents[1] / "terraform" / "state_machine.asl.json"


def moto_api(path, body):
    request = urllib.request.Request(
        f"{ENDPOINT}/moto-api/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def execute_state_machines():
    moto_api("config", {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}})


def render(template: str, values: dict) -> str:
    """What Terraform's templatefile() does with this template: it uses only ${name}."""
    assert "%{" not in template, "the template must not use directives"
    names = set(re.findall(r"\$\{([a-z_]+)\}", template))
    assert names == set(values), f"template placeholders {sorted(names)} != {sorted(values)}"
    return re.sub(r"\$\{([a-z_]+)\}", lambda m: str(values[m.group(1)]), template)


def function_arn(region, name):
    return f"arn:aws:lambda:{region}:{ACCOUNT}:function:totesys-{name}"


class StateMachine:
    """One deployed copy of the state machine, in `region`. `settings` override the template
    values (tables, retry timings, ...)."""

    def __init__(self, region, **settings):
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
        values = {
            "project": "totesys",
            "lock_table": self.lock_table,
            "topic_arn": self.topic_arn,
            "ingest_function_arn": function_arn(region, "ingest"),
            "transform_function_arn": function_arn(region, "transform"),
            "load_function_arn": function_arn(region, "load"),
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
        values.update(settings)
        values["tables"] = json.dumps(values["tables"])
        definition = render(TEMPLATE.read_text(), values)
        json.loads(definition)
        self.arn = self.sfn.create_state_machine(
            name=f"totesys-pipeline-{suffix}",
            definition=definition,
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

    def run(self, name=None, input=None, timeout=120):
        """Starts an execution and waits for its end: (DescribeExecution, history events)."""
        # Named always: moto names an unnamed execution "None", the same every time.
        name = name or f"run-{uuid.uuid4()}"
        arn = self.sfn.start_execution(
            stateMachineArn=self.arn, name=name, input=json.dumps(input or {})
        )["executionArn"]
        deadline = time.monotonic() + timeout
        while True:
            execution = self.sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING":
                break
            assert time.monotonic() < deadline, "the execution did not finish"
            time.sleep(0.2)
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


def invocations(history):
    """(function, payload) of every Lambda task the execution scheduled, in order."""
    calls = []
    for event in history:
        details = event.get("taskScheduledEventDetails")
        if details and details["resourceType"] == "lambda":
            parameters = json.loads(details["parameters"])
            calls.append((parameters["FunctionName"].rsplit("-", 1)[1], parameters["Payload"]))
    return calls

