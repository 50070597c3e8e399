"""make demo's Step Functions part: the pipeline's real state machine definition, executed by
moto (scripts/moto_server.py with LAMBDA_FORWARD_URL), invoking the real Lambdas served by
cargo lambda watch.

Usage (AWS_ENDPOINT_URL: that moto):
  demo_state_machine.py deploy STATE_FILE       the state machine over every table
  demo_state_machine.py run STATE_FILE OUT_DIR  one execution; writes OUT_DIR/ingest.json (the
                                                tables' outputs, the last round's), transform.json,
                                                load.json
"""

import json
import sys
from pathlib import Path

from asl_render import tables
from state_machine import StateMachine, execute_state_machines

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


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"deploy": deploy, "run": run}[command](*args)
