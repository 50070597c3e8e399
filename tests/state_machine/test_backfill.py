"""The datasets' first load (terraform/dataset_backfill.asl.json) executed by moto's Step
Functions interpreter: its Distributed Map lists the landing prefix through the ItemReader
(ListObjectsV2, every page), gives each child execution a batch of keys (ItemBatcher) at
bounded concurrency, and each child invokes ingest until its batch is in. Ingest here is a
Lambda invoke API served by the test (moto forwards this region's invocations to it,
scripts/moto_server.py), so each invocation's payload, timing and answer are the test's.

The real ingest behind the same definition runs in make demo (scripts/demo.sh, the trips'
first load); what ingest does with a batch it is given again, killed or twice at once is
tests/tests/datasets.rs's.

Needs AWS_ENDPOINT_URL pointing at scripts/moto_server.py (scripts/env.sh starts it).
"""

import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from asl_render import ACCOUNT, BACKFILL, backfill_values, render  # noqa: E402
from state_machine import ENDPOINT, ended, execute_state_machines, moto_api  # noqa: E402

REGION = "ap-southeast-2"
PREFIX = "landing/trips/"
FILES = 1103  # two pages of ListObjectsV2
BATCH = 100
CONCURRENCY = 3


class Ingest:
    """A stand-in for the ingest function: records each invocation and answers as `answer`
    (landed keys, how many times this batch was invoked before) says: a payload, or an
    error's type."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []  # (landed keys, start, end)
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def invoke(self, payload):
        landed = tuple(payload["landed"])
        with self._lock:
            before = sum(1 for keys, _, _ in self.calls if keys == landed)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            start = time.monotonic()
        try:
            # Long enough for the Map's other children to start beside this one.
            time.sleep(0.2)
            return self.answer(landed, before)
        finally:
            with self._lock:
                self.running -= 1
                self.calls.append((landed, start, time.monotonic()))

    def batches(self):
        """Each batch invoked, once, in the order of its first invocation."""
        seen = []
        for keys, _, _ in sorted(self.calls, key=lambda c: c[1]):
            if keys not in seen:
                seen.append(keys)
        return seen

    def times_invoked(self, key):
        return sum(1 for keys, _, _ in self.calls if key in keys)


@pytest.fixture
def served():
    """Serves an Ingest over the Lambda invoke API; yields a function that installs one."""
    current = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = current["ingest"].invoke(json.loads(body))
            status = 500 if isinstance(answer, str) else 200
            if isinstance(answer, str):
                answer = {"errorType": answer, "errorMessage": f"{answer} (the test's)"}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    moto_api("reset", {})
    execute_state_machines(forward={REGION: f"http://127.0.0.1:{server.server_port}"})

    def install(ingest):
        current["ingest"] = ingest
        return ingest

    yield install
    server.shutdown()
    execute_state_machines()


def client(service):
    return boto3.client(service, endpoint_url=ENDPOINT, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def landed_files():
    """FILES keys under PREFIX and two that are not, in a landing bucket of their own."""
    s3 = client("s3")
    bucket = f"landing-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    keys = [f"{PREFIX}2024/11/{i:05}.csv" for i in range(FILES)]
    for key in keys + ["landing/other/a.csv", "landing/trips.csv"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"region\n")
    return bucket, keys


def run_backfill(bucket):
    """Deploys the first-load state machine over `bucket` and runs it over PREFIX to its end."""
    sfn = client("stepfunctions")
    values = {**backfill_values("aws", REGION), "landing_bucket": bucket, "batch_files": BATCH,
              "concurrency": CONCURRENCY, "transient_interval_seconds": 1, "transient_max_attempts": 2,
              "transient_backoff_rate": 1, "throttle_interval_seconds": 1, "throttle_max_attempts": 5,
              "throttle_max_delay_seconds": 2}
    arn = sfn.create_state_machine(
        name=f"backfill-{uuid.uuid4().hex[:8]}",
        definition=render(values, BACKFILL.read_text()),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/backfill",
    )["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name=f"run-{uuid.uuid4()}",
                                    input=json.dumps({"prefix": PREFIX}))["executionArn"]
    return ended(sfn, execution, timeout=120)


def test_every_landed_file_is_given_to_ingest_in_bounded_batches_at_bounded_concurrency(served):
    bucket, keys = landed_files()
    unreadable, transient, partly, throttled = keys[150], keys[250], keys[1050], keys[650]

    def answer(landed, before):
        # Ingest records an unreadable file and passes it by the next time.
        if unreadable in landed and before == 0:
            return "InvalidInput"
        if transient in landed and before == 0:
            return "TransientStorageError"
        # Its deadline came with files of the batch left.
        if partly in landed and before == 0:
            return {"complete": False}
        # Lambda throttled it (ingest at its reserved concurrency) more times than a transient
        # error is retried: it waits for a slot.
        if throttled in landed and before < 3:
            return "Lambda.TooManyRequestsException"
        return {"complete": True}

    ingest = served(Ingest(answer))
    execution = run_backfill(bucket)
    assert execution["status"] == "SUCCEEDED", execution

    batches = ingest.batches()
    # Every landed file under the prefix in one batch only, nothing from outside it: batches
    # of BATCH keys in the listing's order, the last one shorter.
    assert sorted(key for batch in batches for key in batch) == keys
    assert sorted(batches) == [tuple(keys[i:i + BATCH]) for i in range(0, FILES, BATCH)]
    # Each batch invoked once, but those invoked again: after the unreadable file (the
    # Catch), after a transient error (the Retry), after its deadline, and after each throttle.
    times = {unreadable: 2, transient: 2, partly: 2, throttled: 4}
    for batch in batches:
        expected = max([n for key, n in times.items() if key in batch], default=1)
        assert sum(1 for keys_, _, _ in ingest.calls if keys_ == batch) == expected, batch
    # Children ran side by side, never more than MaxConcurrency.
    assert 2 <= ingest.most_running <= CONCURRENCY, ingest.most_running


def test_a_batch_failing_fails_the_first_load(served):
    bucket, keys = landed_files()
    broken = keys[420]

    def answer(landed, before):
        return "DatabaseError" if broken in landed else {"complete": True}

    ingest = served(Ingest(answer))
    execution = run_backfill(bucket)
    # ToleratedFailurePercentage 0: one child failing fails the Map Run and the execution,
    # for the operator to see, fix and start again (the files already in are skipped).
    assert execution["status"] == "FAILED", execution
    assert execution.get("error") == "States.ExceedToleratedFailureThreshold", execution
    # A permanent error is not retried.
    assert ingest.times_invoked(broken) == 1
