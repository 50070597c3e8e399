# The datasets' first load: thousands of files already in the landing bucket (a migration, a
# dataset declared after its files landed) are ingested by a Distributed Map over the landing
# prefix, batches of keys at bounded concurrency, rather than by one sweep walking the bucket.
# Start it once per dataset:
#
#   aws stepfunctions start-execution --state-machine-arn <dataset_backfill_state_machine_arn> \
#     --input '{"prefix": "landing/trips/"}'
#
# Each batch's child execution invokes ingest with {"landed": [keys]} until every file of the
# batch is in (dataset_backfill.asl.json). Ingest records each file, so batches run again, or
# an execution started twice, or the sweep running beside it, ingest nothing twice. The files
# are queued for transform as any landed file is: the pipeline's next executions (or, in s3
# mode, the queue's notifications) publish them to the lake and load them.
locals {
  dataset_backfill_name = "${var.project}-dataset-backfill"
  # An ingest invocation Lambda throttles (the function at its reserved concurrency, 1 in s3
  # mode, or the account at its quota) waits for a slot: 25 tries 5 s apart, doubling to at
  # most 5 minutes (up to about 100 minutes in all, with full jitter about half that), where a
  # transient error's var.transient_retry tries would fail its batch or range within a minute
  # or two. Here and in the API windows' machine (dataset_api.tf).
  lambda_throttle_retry = { interval_seconds = 5, max_attempts = 25, max_delay_seconds = 300 }
  # In s3 mode ingest runs one invocation at a time (lambda.tf): more batches at once would
  # only wait throttled.
  dataset_backfill_concurrency = local.use_s3_triggers ? 1 : var.dataset_backfill.concurrency
}

resource "aws_cloudwatch_log_group" "dataset_backfill" {
  count             = local.any_file_dataset
  name              = "/aws/vendedlogs/states/${local.dataset_backfill_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_sfn_state_machine" "dataset_backfill" {
  count    = local.any_file_dataset
  name     = local.dataset_backfill_name
  role_arn = aws_iam_role.dataset_backfill[0].arn

  definition = templatefile("${path.module}/dataset_backfill.asl.json", {
    partition                  = local.partition
    landing_bucket             = aws_s3_bucket.data["landing"].id
    ingest_function_arn        = aws_lambda_function.pipeline["ingest"].arn
    batch_files                = var.dataset_backfill.batch_files
    concurrency                = local.dataset_backfill_concurrency
    transient_interval_seconds = var.transient_retry.interval_seconds
    transient_max_attempts     = var.transient_retry.max_attempts
    transient_backoff_rate     = var.transient_retry.backoff_rate
    throttle_interval_seconds  = local.lambda_throttle_retry.interval_seconds
    throttle_max_attempts      = local.lambda_throttle_retry.max_attempts
    throttle_max_delay_seconds = local.lambda_throttle_retry.max_delay_seconds
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.dataset_backfill[0].arn}:*"
    include_execution_data = true
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }

  depends_on = [aws_iam_role_policy.dataset_backfill]
}

resource "aws_iam_role" "dataset_backfill" {
  count              = local.any_file_dataset
  name               = local.dataset_backfill_name
  assume_role_policy = data.aws_iam_policy_document.assume["states"].json
}

data "aws_iam_policy_document" "dataset_backfill" {
  statement {
    sid       = "InvokeIngest"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.pipeline["ingest"].arn, "${aws_lambda_function.pipeline["ingest"].arn}:*"]
  }

  # The Map's ItemReader lists the landing prefixes (ListObjectsV2), nothing else of the bucket.
  statement {
    sid       = "ListLandedFiles"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.data["landing"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [for d in values(local.file_datasets) : "${d.source.prefix}*"]
    }
  }

  # A Distributed Map runs each batch as a child execution of this state machine; the ARN is
  # built from the name, as the state machine's own would make a cycle.
  statement {
    sid       = "RunChildExecutions"
    actions   = ["states:StartExecution"]
    resources = ["arn:${local.partition}:states:${local.region}:${local.account_id}:stateMachine:${local.dataset_backfill_name}"]
  }

  statement {
    sid     = "FollowChildExecutions"
    actions = ["states:DescribeExecution", "states:StopExecution"]
    resources = [
      "arn:${local.partition}:states:${local.region}:${local.account_id}:execution:${local.dataset_backfill_name}:*",
      "arn:${local.partition}:states:${local.region}:${local.account_id}:execution:${local.dataset_backfill_name}/*",
    ]
  }

  # CloudWatch Logs delivery and X-Ray take no resource-level permissions: "*" is required.
  statement {
    sid       = "DeliverLogsAndTraces"
    actions   = local.state_machine_log_and_trace_actions
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "dataset_backfill" {
  count  = local.any_file_dataset
  name   = local.dataset_backfill_name
  role   = aws_iam_role.dataset_backfill[0].id
  policy = data.aws_iam_policy_document.dataset_backfill.json
}
