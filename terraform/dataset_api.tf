# Datasets paged from an HTTP API (source.api in datasets/*.json; docs/src/http-sources.md).
# Each has a schedule (source.api.schedule) that starts this state machine with
# {"api": {"dataset": name}, "concurrency": n}: ingest plans the window (the first load in
# first_load_ranges ranges of about as many records each, a daily run in one) and a Map reads
# its ranges at most n at once (dataset_api.asl.json). Ingest commits each file in the
# dataset's state with a conditional write, so a range run twice, an execution started while
# another runs, or a retry after a lost result reads nothing twice; the files are queued for
# transform as landed files' are.
#
# The app tokens: a secret per distinct source.api.token.secret, created here empty (put the
# token in it: its string, or JSON with "token"), readable by ingest alone. Ingest reaches the
# portal over the internet: with vpc_subnet_ids set, those subnets need a route out (a NAT
# gateway).
locals {
  api_datasets      = { for n, d in local.datasets : n => d if try(d.source.api, null) != null }
  any_api_dataset   = length(local.api_datasets) > 0 ? 1 : 0
  api_token_secrets = toset([for d in values(local.api_datasets) : d.source.api.token.secret if try(d.source.api.token, null) != null])
  dataset_api_name  = "${var.project}-dataset-api"
}

resource "aws_secretsmanager_secret" "api_token" {
  # checkov:skip=CKV2_AWS_57:An open-data portal's app token is issued by the portal; its owner replaces it there and here.
  for_each                = local.api_token_secrets
  name                    = each.key
  description             = "The app token ${var.project}'s ingest sends to an open-data API (datasets: ${join(", ", [for n, d in local.api_datasets : n if try(d.source.api.token.secret, null) == each.key])})"
  kms_key_id              = aws_kms_key.pipeline.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_cloudwatch_log_group" "dataset_api" {
  count             = local.any_api_dataset
  name              = "/aws/vendedlogs/states/${local.dataset_api_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_sfn_state_machine" "dataset_api" {
  count    = local.any_api_dataset
  name     = local.dataset_api_name
  role_arn = aws_iam_role.dataset_api[0].arn

  definition = templatefile("${path.module}/dataset_api.asl.json", {
    partition                  = local.partition
    ingest_function_arn        = aws_lambda_function.pipeline["ingest"].arn
    transient_interval_seconds = var.transient_retry.interval_seconds
    transient_max_attempts     = var.transient_retry.max_attempts
    transient_backoff_rate     = var.transient_retry.backoff_rate
    throttle_interval_seconds  = local.lambda_throttle_retry.interval_seconds
    throttle_max_attempts      = local.lambda_throttle_retry.max_attempts
    throttle_max_delay_seconds = local.lambda_throttle_retry.max_delay_seconds
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.dataset_api[0].arn}:*"
    include_execution_data = true
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }

  depends_on = [aws_iam_role_policy.dataset_api]
}

resource "aws_iam_role" "dataset_api" {
  count              = local.any_api_dataset
  name               = local.dataset_api_name
  assume_role_policy = data.aws_iam_policy_document.assume["states"].json
}

data "aws_iam_policy_document" "dataset_api" {
  statement {
    sid       = "InvokeIngest"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.pipeline["ingest"].arn, "${aws_lambda_function.pipeline["ingest"].arn}:*"]
  }

  # CloudWatch Logs delivery and X-Ray take no resource-level permissions: "*" is required.
  statement {
    sid       = "DeliverLogsAndTraces"
    actions   = local.state_machine_log_and_trace_actions
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "dataset_api" {
  count  = local.any_api_dataset
  name   = local.dataset_api_name
  role   = aws_iam_role.dataset_api[0].id
  policy = data.aws_iam_policy_document.dataset_api.json
}

# Each API dataset's schedule.
resource "aws_cloudwatch_event_rule" "dataset_api" {
  for_each            = local.api_datasets
  name                = "${var.project}-api-${each.key}"
  description         = "Reads the new window of ${each.key} from ${each.value.source.api.base_url}${each.value.source.api.resource}"
  schedule_expression = each.value.source.api.schedule
  state               = var.schedule_enabled ? "ENABLED" : "DISABLED"
}

resource "aws_cloudwatch_event_target" "dataset_api" {
  for_each = local.api_datasets
  rule     = aws_cloudwatch_event_rule.dataset_api[each.key].name
  arn      = aws_sfn_state_machine.dataset_api[0].arn
  role_arn = aws_iam_role.dataset_api_schedule[0].arn
  # In s3 mode ingest runs one invocation at a time (lambda.tf): one range at a time.
  input = jsonencode({
    api         = { dataset = each.key }
    concurrency = local.use_s3_triggers ? 1 : try(each.value.source.api.concurrency, 4)
  })
}

resource "aws_iam_role" "dataset_api_schedule" {
  count              = local.any_api_dataset
  name               = "${local.dataset_api_name}-schedule"
  assume_role_policy = data.aws_iam_policy_document.assume["events"].json
}

data "aws_iam_policy_document" "dataset_api_schedule" {
  count = local.any_api_dataset
  statement {
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.dataset_api[0].arn]
  }
}

resource "aws_iam_role_policy" "dataset_api_schedule" {
  count  = local.any_api_dataset
  name   = "${local.dataset_api_name}-schedule"
  role   = aws_iam_role.dataset_api_schedule[0].id
  policy = data.aws_iam_policy_document.dataset_api_schedule[0].json
}
