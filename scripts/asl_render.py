"""terraform/state_machine.asl.json rendered as Terraform's templatefile() renders it (sfn.tf),
for the state machine tests, make demo and the ASL check (scripts/check-asl.sh); and the
datasets' first-load state machine, terraform/dataset_backfill.asl.json (dataset_backfill.tf),
and the API datasets' windows, terraform/dataset_api.asl.json (dataset_api.tf), for the ASL
check.

Standard library only: the check runs it with any python3.

Usage: python3 scripts/asl_render.py PARTITION OUT_FILE [backfill | api]
    the definition (or the backfill's, or the API windows') with realistic values
"""

import json
import re
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1] / "terraform" / "state_machine.asl.json"
BACKFILL = TEMPLATE.parent / "dataset_backfill.asl.json"
API = TEMPLATE.parent / "dataset_api.asl.json"
ACCOUNT = "123456789012"


def render(values: dict, template: str | None = None) -> str:
    """What templatefile() does with this template: it uses only ${name}. Every placeholder
    must be given and every value used, as tests/tests/terraform.rs checks for sfn.tf."""
    template = TEMPLATE.read_text() if template is None else template
    assert "%{" not in template, "the template must not use directives"
    names = set(re.findall(r"\$\{([a-z_]+)\}", template))
    assert names == set(values), f"template placeholders {sorted(names)} != {sorted(values)}"
    rendered = re.sub(r"\$\{([a-z_]+)\}", lambda m: str(values[m.group(1)]), template)
    json.loads(rendered)
    return rendered


def function_arn(partition, region, name, project="totesys"):
    return f"arn:{partition}:lambda:{region}:{ACCOUNT}:function:{project}-{name}"


def values(partition="aws", region="eu-west-2", **settings) -> dict:
    """The values sfn.tf passes, as a deployment with the defaults of variables.tf would have
    them; `settings` override any of them."""
    result = {
        "project": "totesys",
        "partition": partition,
        "lock_table": "totesys-pipeline-lock",
        "topic_arn": f"arn:{partition}:sns:{region}:{ACCOUNT}:totesys-alarms",
        "ingest_function_arn": function_arn(partition, region, "ingest"),
        "transform_function_arn": function_arn(partition, region, "transform"),
        "load_function_arn": function_arn(partition, region, "load"),
        "tables": [
            "address", "counterparty", "currency", "department", "design", "payment",
            "payment_type", "purchase_order", "sales_order", "staff", "transaction",
        ],
        "map_concurrency": 4,
        "execution_timeout_seconds": 10800,
        "transient_interval_seconds": 5,
        "transient_max_attempts": 4,
        "transient_backoff_rate": 2,
        "missing_dimension_interval_seconds": 30,
        "missing_dimension_max_attempts": 3,
        "missing_dimension_backoff_rate": 2,
        "history_budget": 20000,
    }
    result.update(settings)
    # sfn.tf splits var.tables into the two Maps' lists as this does.
    tables = result.pop("tables")
    result.setdefault("round_events", len(tables) * 12 + 40)
    facts = fact_tables()
    result["dimension_tables"] = json.dumps([t for t in tables if t not in facts])
    result["fact_tables"] = json.dumps([t for t in tables if t in facts])
    return result


def tables() -> list:
    """The state machine's table list, as Terraform gives it (variable "tables")."""
    text = (TEMPLATE.parent / "variables.tf").read_text()
    block = text[text.index('variable "tables"'):]
    return re.findall(r'"([a-z_]+)"', block[block.index("default"):block.index("]")])


def fact_tables() -> list:
    """local.fact_tables of terraform/sfn.tf."""
    sfn = (TEMPLATE.parent / "sfn.tf").read_text()
    block = re.search(r"fact_tables\s*=\s*\[([^\]]*)\]", sfn)
    assert block, "local.fact_tables in terraform/sfn.tf"
    return re.findall(r'"([a-z_]+)"', block.group(1))


def throttle_retry() -> dict:
    """local.lambda_throttle_retry of terraform/dataset_backfill.tf (a throttled invocation's
    retries), as the templates' throttle_* values."""
    tf = (TEMPLATE.parent / "dataset_backfill.tf").read_text()
    block = re.search(r"lambda_throttle_retry\s*=\s*\{([^}]*)\}", tf)
    assert block, "local.lambda_throttle_retry in terraform/dataset_backfill.tf"
    return {f"throttle_{k}": int(v) for k, v in re.findall(r"([a-z_]+)\s*=\s*(\d+)", block.group(1))}


def backfill_values(partition="aws", region="eu-west-2") -> dict:
    """The values dataset_backfill.tf passes, with the defaults of variables.tf."""
    return {
        "partition": partition,
        "landing_bucket": "totesys-landing-123456789012",
        "ingest_function_arn": function_arn(partition, region, "ingest"),
        "batch_files": 100,
        "concurrency": 10,
        "transient_interval_seconds": 5,
        "transient_max_attempts": 4,
        "transient_backoff_rate": 2,
        **throttle_retry(),
    }


def api_values(partition="aws", region="eu-west-2") -> dict:
    """The values dataset_api.tf passes, with the defaults of variables.tf."""
    return {
        "partition": partition,
        "ingest_function_arn": function_arn(partition, region, "ingest"),
        "transient_interval_seconds": 5,
        "transient_max_attempts": 4,
        "transient_backoff_rate": 2,
        **throttle_retry(),
    }


if __name__ == "__main__":
    partition, out, *which = sys.argv[1:]
    region = {"aws": "eu-west-2", "aws-us-gov": "us-gov-west-1", "aws-cn": "cn-north-1"}[partition]
    if which == ["backfill"]:
        Path(out).write_text(render(backfill_values(partition, region), BACKFILL.read_text()))
    elif which == ["api"]:
        Path(out).write_text(render(api_values(partition, region), API.read_text()))
    else:
        Path(out).write_text(render(values(partition, region)))
