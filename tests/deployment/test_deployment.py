"""What a user deploying meets before AWS does: Terraform's variable validations (run by
Terraform itself, scripts/terraform.sh, over a copy of terraform/variables.tf: no provider
needed), make plan refusing to put the state in a local file unasked, and the GitHub deploy
workflow agreeing with the Terraform and the docs.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "scripts" / "terraform.sh"
CREDENTIALS = {"host": "db.example.com", "port": 5432, "user": "u", "password": "p", "database": "d"}


@pytest.fixture(scope="module")
def variables(tmp_path_factory):
    """A folder holding only variables.tf, initialised: Terraform plans it without providers,
    and planning evaluates every validation."""
    folder = tmp_path_factory.mktemp("variables")
    shutil.copy(ROOT / "terraform" / "variables.tf", folder)
    subprocess.run([TERRAFORM, f"-chdir={folder}", "init", "-backend=false", "-input=false"],
                   check=True, capture_output=True)
    return folder


def plan(folder, var_file=None, **settings):
    """terraform plan with the credentials and `settings` (None: left unset): the error text,
    or None when the plan passes."""
    values = {"source_db": CREDENTIALS, "warehouse_db": CREDENTIALS, **settings}
    (folder / "test.tfvars.json").write_text(json.dumps({k: v for k, v in values.items() if v is not None}))
    command = [TERRAFORM, f"-chdir={folder}", "plan", "-input=false", "-no-color", "-var-file=test.tfvars.json"]
    if var_file:
        command.append(f"-var-file={var_file}")
    result = subprocess.run(command, capture_output=True, text=True)
    return None if result.returncode == 0 else " ".join(result.stderr.split())


def test_the_defaults_and_the_example_plan(variables):
    assert plan(variables) is None
    assert plan(variables, var_file=ROOT / "terraform" / "examples" / "plan.tfvars") is None


@pytest.mark.parametrize("value", [0, -1, 1.5])
def test_map_concurrency_is_a_whole_number_from_one(variables, value):
    # Step Functions reads MaxConcurrency 0 as no limit: every table's connection at once.
    assert "map_concurrency must be a whole number of at least 1" in plan(variables, map_concurrency=value)
    assert plan(variables, map_concurrency=1) is None


@pytest.mark.parametrize("database", ["source_db", "warehouse_db"])
def test_sslmode_is_one_the_code_reads(variables, database):
    # verify-full planned happily and then failed every load with a Configuration error.
    for mode in ["verify-full", "verify-ca", "allow", "REQUIRE"]:
        error = plan(variables, **{database: {**CREDENTIALS, "sslmode": mode}})
        assert f"{database}.sslmode must be disable, prefer or require" in error, error
    for mode in ["disable", "prefer", "require"]:
        assert plan(variables, **{database: {**CREDENTIALS, "sslmode": mode}}) is None


@pytest.mark.parametrize("retry", ["transient_retry", "missing_dimension_retry"])
@pytest.mark.parametrize("bad", [{"backoff_rate": 0.5}, {"interval_seconds": 0}, {"interval_seconds": 1.5}, {"max_attempts": -1}])
def test_retries_are_ones_step_functions_takes(variables, retry, bad):
    # A BackoffRate under 1 planned happily and failed only at CreateStateMachine.
    good = {"interval_seconds": 5, "max_attempts": 4, "backoff_rate": 2}
    assert f"{retry}: interval_seconds is a whole number" in plan(variables, **{retry: {**good, **bad}})
    assert plan(variables, **{retry: {**good, "max_attempts": 0, "backoff_rate": 1}}) is None


@pytest.mark.parametrize("function", [{"memory": 64, "timeout": 60}, {"memory": 20000, "timeout": 60}, {"memory": 256, "timeout": 901}, {"memory": 256, "timeout": 0}])
def test_lambda_memory_and_timeout_are_within_lambdas_limits(variables, function):
    settings = {name: {"memory": 256, "timeout": 300} for name in ["ingest", "transform", "load"]}
    error = plan(variables, lambda_settings={**settings, "load": function})
    assert "memory is a whole number of MB from 128 to 10240" in error, error
    assert plan(variables, lambda_settings=settings) is None


@pytest.mark.parametrize("suffix", ["Upper", "-dash", "under_score", "x" * 41])
def test_the_bucket_suffix_makes_valid_bucket_names(variables, suffix):
    assert "bucket_suffix must be lowercase letters" in plan(variables, bucket_suffix=suffix)
    assert plan(variables, bucket_suffix="123456789012-dev") is None


DIMENSIONS = ["address", "counterparty", "currency", "department", "design", "payment_type", "staff", "transaction"]


@pytest.mark.parametrize("tables", [["staff", "staf"], ["sales_order", "staff"], ["payment", *DIMENSIONS[1:]]])
def test_tables_are_source_tables_and_facts_come_with_every_dimension(variables, tables):
    # Leaving out a dimension table would freeze the fact tables at its old watermark.
    error = plan(variables, tables=tables)
    assert error is not None
    assert "only ToteSys source tables" in error or "without every dimension table" in error, error
    assert plan(variables, tables=DIMENSIONS) is None
    assert plan(variables, tables=[*DIMENSIONS, "payment"]) is None
    assert plan(variables, tables=["currency"]) is None


@pytest.mark.parametrize(
    "subnets, groups",
    [(["subnet-0a1b2c3d4e5f60718"], []), ([], ["sg-0123456789abcdef0"])],
)
def test_subnets_and_security_groups_go_together(variables, subnets, groups):
    error = plan(variables, vpc_subnet_ids=subnets, vpc_security_group_ids=groups)
    assert "vpc_subnet_ids and vpc_security_group_ids go together" in error
    assert plan(variables, vpc_subnet_ids=["subnet-0a1b2c3d4e5f60718"],
                vpc_security_group_ids=["sg-0123456789abcdef0"]) is None


@pytest.mark.parametrize("email", ["data-team", "a@b.com, c@d.com", "data team@example.com", "x@localhost"])
def test_the_alarm_email_is_one_address_or_empty(variables, email):
    assert "alarm_email must be one email address" in plan(variables, alarm_email=email)
    assert plan(variables, alarm_email="data-team@example.com") is None
    assert plan(variables, alarm_email="") is None


def settings(**concurrency):
    base = {"ingest": {"memory": 256, "timeout": 300}, "transform": {"memory": 512, "timeout": 600},
            "load": {"memory": 256, "timeout": 900}}
    for function, value in concurrency.items():
        base[function]["concurrency"] = value
    return base


def test_reserved_concurrency_is_none_or_at_least_one(variables):
    assert "a reserved concurrency is null (none) or a whole number of at least 1" in plan(
        variables, lambda_settings=settings(load=0))
    assert plan(variables, lambda_settings=settings(load=2)) is None


def test_s3_mode_runs_one_ingest_and_one_transform_at_a_time(variables):
    # Nothing but the reservation of 1 keeps two transforms from merging one snapshot.
    error = plan(variables, trigger_mode="s3", lambda_settings=settings(transform=2))
    assert "in s3 mode ingest and transform run one at a time" in error
    assert plan(variables, trigger_mode="s3", lambda_settings=settings(transform=1, load=3)) is None
    # Under the state machine its lock keeps runs apart, so any reservation is the user's call.
    assert plan(variables, lambda_settings=settings(transform=2)) is None


@pytest.mark.parametrize("rows", [0, -1, 2.5])
def test_a_file_holds_a_whole_number_of_rows_from_one(variables, rows):
    assert "ingest_max_rows_per_file is a whole number of rows, at least 1" in plan(
        variables, ingest_max_rows_per_file=rows)
    assert plan(variables, ingest_max_rows_per_file=1) is None


@pytest.mark.parametrize("rows", [-1, 0.5])
def test_the_bulk_threshold_is_a_whole_number_of_rows(variables, rows):
    assert "load_bulk_min_rows is a whole number of rows, 0 to turn the bulk path off" in plan(
        variables, load_bulk_min_rows=rows)
    assert plan(variables, load_bulk_min_rows=0) is None


@pytest.mark.parametrize("margin", [-1, 300, 1000])
def test_the_deadline_margin_is_less_than_every_timeout(variables, margin):
    # ingest's timeout is 300 s: a margin of 300 s leaves it no time to start a second file.
    assert "deadline_margin_seconds is at least 0 and less than every function's timeout" in plan(
        variables, deadline_margin_seconds=margin)
    assert plan(variables, deadline_margin_seconds=299) is None


@pytest.mark.parametrize("days", [1, 6, 31])
def test_the_secret_recovery_window_is_one_secrets_manager_takes(variables, days):
    assert "secret_recovery_window_days must be 0 or from 7 to 30" in plan(
        variables, secret_recovery_window_days=days)
    assert plan(variables, secret_recovery_window_days=0) is None


@pytest.mark.parametrize("day", ["2024-11-14", "2024/13/01", "24/11/14", "2024/11/14 "])
def test_the_lake_starts_on_a_day_in_the_projections_format(variables, day):
    assert "lake_first_day is a day written yyyy/MM/dd" in plan(variables, lake_first_day=day)
    assert plan(variables, lake_first_day="2024/11/14") is None


@pytest.mark.parametrize("cutoff", [0, 10485759, 1e7 + 0.5])
def test_the_athena_scan_cutoff_is_one_athena_takes(variables, cutoff):
    assert "athena_bytes_scanned_cutoff_per_query is a whole number of bytes, at least 10485760" in plan(
        variables, athena_bytes_scanned_cutoff_per_query=cutoff)
    assert plan(variables, athena_bytes_scanned_cutoff_per_query=10485760) is None


def test_the_daily_scan_alarm_is_positive_or_off(variables):
    assert "athena_daily_bytes_scanned_alarm is a positive number of bytes" in plan(
        variables, athena_daily_bytes_scanned_alarm=0)
    assert plan(variables, athena_daily_bytes_scanned_alarm=1) is None
    off = variables / "no-alarm.tfvars"
    off.write_text("athena_daily_bytes_scanned_alarm = null\n")
    assert plan(variables, var_file=off) is None


@pytest.mark.parametrize("days", [0, 1.5])
def test_query_results_are_kept_whole_days(variables, days):
    assert "athena_results_days is a whole number of days, at least 1" in plan(
        variables, athena_results_days=days)
    assert plan(variables, athena_results_days=1) is None


def test_the_freshness_alarm_needs_a_period_it_can_count(variables):
    assert "freshness_alarm_multiple is at least 1" in plan(variables, freshness_alarm_multiple=0.5)
    # A cron schedule has no single period: the threshold must be given in seconds.
    cron = "cron(0/20 * * * ? *)"
    assert "must be set when schedule_expression is not a rate() expression" in plan(
        variables, schedule_expression=cron)
    assert plan(variables, schedule_expression=cron, freshness_alarm_seconds=3600) is None
    assert "freshness_alarm_seconds is from 60 to 604800" in plan(
        variables, schedule_expression=cron, freshness_alarm_seconds=30)
    assert "freshness_alarm_seconds is from 60 to 604800" in plan(
        variables, schedule_expression=cron, freshness_alarm_seconds=604801)
    # Past a day: evaluated hour by hour, up to CloudWatch's 7 days.
    assert plan(variables, schedule_expression=cron, freshness_alarm_seconds=604800) is None
    assert plan(variables, schedule_expression="rate(1 hour)", freshness_alarm_multiple=2) is None
    assert plan(variables, schedule_expression="rate(1 day)", freshness_alarm_multiple=7) is None
    assert "come to more than 7 days" in plan(
        variables, schedule_expression="rate(2 days)", freshness_alarm_multiple=4)


@pytest.mark.parametrize("target", ["plan", "deploy", "destroy"])
def test_make_refuses_to_put_the_state_in_a_local_file_unasked(target, tmp_path):
    # A stand-in terraform on PATH records whether it was run at all.
    marker = tmp_path / "ran"
    (tmp_path / "terraform").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (tmp_path / "terraform").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_BACKEND_CONFIG", "TF_LOCAL_STATE")}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    result = subprocess.run(["make", "-s", target], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "Where should the Terraform state live?" in result.stderr
    assert not marker.exists(), "terraform did not run"
    assert not (ROOT / "terraform" / "local_backend_override.tf").exists()


def deploy_workflow():
    return yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())


def test_the_deploy_workflow_sets_only_variables_terraform_declares():
    declared = set(re.findall(r'^variable "([a-z_]+)"', (ROOT / "terraform" / "variables.tf").read_text(), re.M))
    steps = deploy_workflow()["jobs"]["deploy"]["steps"]
    given = {name.removeprefix("TF_VAR_") for step in steps for name in step.get("env", {})
             if name.startswith("TF_VAR_")}
    assert given <= declared, given - declared
    # The first backfill runs with the schedule off (docs/src/deploying.md): a repository variable.
    assert "schedule_enabled" in given


def test_the_documented_trust_policy_matches_the_deploy_jobs_token():
    # A job that names an environment gets sub = repo:ORG/REPO:environment:NAME, without the
    # branch; a trust policy on the branch's subject never matches it.
    environment = deploy_workflow()["jobs"]["deploy"]["environment"]
    readme = (ROOT / "docs" / "src" / "deploying.md").read_text()
    subjects = re.findall(r'"token\.actions\.githubusercontent\.com:sub": "([^"]+)"', readme)
    assert subjects == [f"repo:ORG/REPO:environment:{environment}"]
