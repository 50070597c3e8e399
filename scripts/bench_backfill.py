"""make bench's backfill: one source, ingested, transformed and loaded into an empty warehouse
the way the state machine runs it (terraform/state_machine.asl.json): rounds of ingest, the
dimension tables then the fact tables, one invocation per table; transform until complete,
loading each output until complete before the next transform; another round while a table
is incomplete. Each invocation is a process of its own (`bench invoke`), with a deadline
DEADLINE seconds away, so its wall time and peak memory are its own.

Prints one JSON line: per stage the invocations, the wall time summed, the rows, the slowest
invocation and the highest peak RSS; whether every invocation ended before its deadline; and
the check of the warehouse against the source (aggregates computed in SQL on both sides).

Usage (inside scripts/env.sh, with INGEST_BUCKET, PROCESSED_BUCKET, SOURCE_DB_URL and
WAREHOUSE_DB_URL set for the Lambdas): bench_backfill.py BENCH_BINARY DEADLINE_SECONDS
With BENCH_LOG set, every invocation's log lines follow on standard error.
"""

import json
import os
import subprocess
import sys
import time

from asl_render import fact_tables, tables

# The two Maps' lists, as sfn.tf splits Terraform's table list.
FACT_TABLES = [t for t in tables() if t in fact_tables()]
DIMENSION_TABLES = [t for t in tables() if t not in fact_tables()]

# Both sides of the check: (name, warehouse query, source query), each one row of numbers.
CHECKS = [
    ("fact_sales_order",
     "SELECT count(*), count(DISTINCT sales_order_id), sum(units_sold), sum(unit_price), "
     "sum(sales_staff_id), sum(design_id), sum(counterparty_id) FROM fact_sales_order",
     "SELECT count(*), count(*), sum(units_sold), sum(unit_price), sum(staff_id), sum(design_id), "
     "sum(counterparty_id) FROM sales_order"),
    ("fact_purchase_order",
     "SELECT count(*), sum(item_quantity), sum(item_unit_price), sum(staff_id), "
     "sum(agreed_delivery_location_id) FROM fact_purchase_order",
     "SELECT count(*), sum(item_quantity), sum(item_unit_price), sum(staff_id), "
     "sum(agreed_delivery_location_id) FROM purchase_order"),
    ("fact_payment",
     "SELECT count(*), sum(payment_amount), count(*) FILTER (WHERE paid), sum(transaction_id) "
     "FROM fact_payment",
     "SELECT count(*), sum(payment_amount), count(*) FILTER (WHERE paid), sum(transaction_id) "
     "FROM payment"),
    ("dim_transaction",
     "SELECT count(*), sum(coalesce(sales_order_id, 0)), sum(coalesce(purchase_order_id, 0)) "
     "FROM dim_transaction",
     "SELECT count(*), sum(coalesce(sales_order_id, 0)), sum(coalesce(purchase_order_id, 0)) "
     "FROM transaction"),
    ("dimensions",
     "SELECT (SELECT count(*) FROM dim_staff), (SELECT count(*) FROM dim_counterparty), "
     "(SELECT count(*) FROM dim_currency), (SELECT count(*) FROM dim_design), "
     "(SELECT count(*) FROM dim_location), (SELECT count(*) FROM dim_payment_type)",
     "SELECT (SELECT count(*) FROM staff), (SELECT count(*) FROM counterparty), "
     "(SELECT count(*) FROM currency), (SELECT count(*) FROM design), "
     "(SELECT count(*) FROM address), (SELECT count(*) FROM payment_type)"),
]


class Backfill:
    def __init__(self, binary, deadline):
        self.binary, self.deadline = binary, deadline
        self.stages = {s: {"invocations": 0, "seconds": 0.0, "rows": 0, "slowest": 0.0,
                           "peak_rss_mb": 0.0} for s in ("ingest", "transform", "load")}
        self.all_before_deadline = True

    def invoke(self, lambda_name, event):
        result = subprocess.run([self.binary, "invoke", lambda_name, str(self.deadline)],
                                input=json.dumps(event), capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{lambda_name} failed on {json.dumps(event)[:300]}:\n{result.stderr[-3000:]}")
        if os.environ.get("BENCH_LOG"):
            # The Lambdas' own log lines (bench invoke writes them to stderr with BENCH_LOG).
            sys.stderr.write(result.stderr)
        line = json.loads(result.stdout.strip().splitlines()[-1])
        stage = self.stages[lambda_name]
        stage["invocations"] += 1
        stage["seconds"] += line["seconds"]
        stage["slowest"] = max(stage["slowest"], line["seconds"])
        stage["peak_rss_mb"] = max(stage["peak_rss_mb"], line["peak_rss_mb"])
        self.all_before_deadline &= line["ended_before_deadline"]
        output = line["output"]
        stage["rows"] += sum((output.get("row_counts") or output.get("loaded") or {}).values())
        return output

    def run(self):
        rounds = 0
        while True:
            rounds += 1
            results = []
            for tables in (DIMENSION_TABLES, FACT_TABLES):
                results.append([{"failed": False, "output": self.invoke("ingest", {"tables_to_query": [t]})}
                                for t in tables])
            outputs = [r["output"] for group in results for r in group]
            if any(o["has_new_data"] for o in outputs):
                event = results
                while event is not None:
                    transformed = self.invoke("transform", event)
                    if transformed["has_new_data"]:
                        load_event = transformed
                        while load_event is not None:
                            load_event = self.invoke("load", load_event)["remaining"]
                    event = transformed["remaining"]
            if all(o["complete"] for o in outputs):
                return rounds
            if rounds > 10_000:
                sys.exit("no end to the rounds")


def query(url, sql):
    out = subprocess.run(["psql", url, "-XAtqc", sql], capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.strip().split("|")]


def main():
    binary, deadline = sys.argv[1], float(sys.argv[2])
    backfill = Backfill(binary, deadline)
    started = time.monotonic()
    rounds = backfill.run()
    wall = time.monotonic() - started
    checks = {}
    for name, warehouse_sql, source_sql in CHECKS:
        got = query(os.environ["WAREHOUSE_DB_URL"], warehouse_sql)
        want = query(os.environ["SOURCE_DB_URL"], source_sql)
        checks[name] = "equal" if got == want else f"warehouse {got} != source {want}"
    print(json.dumps({
        "deadline_seconds": deadline,
        "rounds": rounds,
        "wall_seconds": wall,
        "stages": backfill.stages,
        "every_invocation_ended_before_its_deadline": backfill.all_before_deadline,
        "warehouse_equals_source": all(v == "equal" for v in checks.values()),
        "checks": checks,
    }))


if __name__ == "__main__":
    main()
