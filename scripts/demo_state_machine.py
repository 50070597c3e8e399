"""make demo's Step Functions part: the pipeline's real state machine definition, executed by
moto (scripts/moto_server.py with LAMBDA_FORWARD_URL), invoking the real Lambdas served by
cargo lambda watch.

Usage (AWS_ENDPOINT_URL: that moto):
  demo_state_machine.py deploy STATE_FILE       the state machine over every table
  demo_state_machine.py run STATE_FILE OUT_DIR  one execution; writes OUT_DIR/ingest.json (the
                                                tables' outputs, the last round's), transform.json,
                                                load.json
  demo_state_machine.py backfill LANDING_BUCKET PREFIX BATCH CONCURRENCY
                                                the datasets' first load
                                                (terraform/dataset_backfill.asl.json) over PREFIX,
                                                run to its end
  demo_state_machine.py api DATASET CONCURRENCY  an API dataset's window
                                                (terraform/dataset_api.asl.json), run to its end
"""

import json
import sys
import time
import uuid
from pathlib import Path

import boto3

from asl_render import ACCOUNT, API, BACKFILL, api_values, backfill_values, render, tables
from state_machine import ENDPOINT, StateMachine, ended, execute_state_machines

# The Maps' inner states, one per table: left out of the printed path.
INNER = ("IngestDimension", "DimensionIngestFailed", "IngestFact", "FactIngestFailed")


def deploy(state_file):
    execute_state_machines()
    machine = StateMachine("eu-west-2", tables=tables(), map_concurrency=4, execution_timeout_seconds=900)
    machine.save(state_file)
    print(f"  state machine {machine.arn}")
    print(f"  lock table {machine.lock_table}; {len(tables())} tables, 4 at a time")


def run(state_file, out_dir):
    machine = StateMachine.attach(state_file)
    execution, history = machine.run(timeout=900)
    path = []
    for event in history:
        details = event.get("stateEnteredEventDetails")
        if details and details["name"] not in INNER and details["name"] not in path[-1:]:
            path.append(details["name"])
    print("  states: " + " -> ".join(path))
    print(f"  execution {execution['status']}")
    if execution["status"] != "SUCCEEDED":
        print(f"  {execution.get('error')}: {execution.get('cause')}")
        sys.exit(1)
    output = json.loads(execution["output"])
    out = Path(out_dir)
    if "ingest_facts" in output:
        # The last round's two Maps: the dimension tables', then the fact tables'.
        results = output.get("ingest_dimensions", []) + output["ingest_facts"]
        ok = [t["output"] for t in results if not t["failed"]]
        (out / "ingest.json").write_text(json.dumps(ok))
    if "transform" in output:
        (out / "transform.json").write_text(json.dumps(output["transform"]["Payload"]))
    if "load" in output:
        (out / "load.json").write_text(json.dumps(output["load"]["Payload"]))
    if "skipped" in output:
        print(f"  skipped: {output['skipped']}")
    if machine.lock_item() is not None:
        sys.exit("the lock was not released")


def execute(template, values, name, input):
    """Deploys the definition `template` rendered with `values` and runs one execution of it
    with `input` to its end; exits unless it succeeds."""
    execute_state_machines()
    sfn = boto3.client("stepfunctions", endpoint_url=ENDPOINT, region_name="eu-west-2")
    arn = sfn.create_state_machine(
        name=f"totesys-{name}-{uuid.uuid4().hex[:8]}",
        definition=render(values, template.read_text()),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/totesys-{name}",
    )["stateMachineArn"]
    print(f"  state machine {arn}")
    started = time.monotonic()
    execution = sfn.start_execution(stateMachineArn=arn, name=f"run-{uuid.uuid4()}",
                                    input=json.dumps(input))["executionArn"]
    described = ended(sfn, execution, timeout=900)
    print(f"  execution {described['status']} in {time.monotonic() - started:.1f} s")
    for run in sfn.list_map_runs(executionArn=execution)["mapRuns"]:
        counts = sfn.describe_map_run(mapRunArn=run["mapRunArn"])["executionCounts"]
        print(f"  map run: {counts['total']} child executions, {counts['succeeded']} succeeded, "
              f"{counts['failed']} failed")
    if described["status"] != "SUCCEEDED":
        print(f"  {described.get('error')}: {described.get('cause')}")
        sys.exit(1)
    return json.loads(described["output"])


def backfill(landing, prefix, batch, concurrency):
    print(f"  batches of {batch} files, {concurrency} at a time")
    values = {**backfill_values("aws", "eu-west-2"), "landing_bucket": landing, "batch_files": batch,
              "concurrency": concurrency}
    execute(BACKFILL, values, "dataset-backfill", {"prefix": prefix})


def api(dataset, concurrency):
    print(f"  ranges read {concurrency} at a time")
    output = execute(API, api_values("aws", "eu-west-2"), "dataset-api",
                     {"api": {"dataset": dataset}, "concurrency": int(concurrency)})
    print(f"  the ranges planned and read: {output['plan']['ranges']}")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"deploy": deploy, "run": run, "backfill": backfill, "api": api}[command](*args)
