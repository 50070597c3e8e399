# The pipeline as a state machine: lock, ingest each dimension table then each fact table (two
# Maps), skip when nothing is new, transform, load, each again while it reports work left;
# release; any other error notifies the topic and fails the execution.
locals {
  state_machine_name = "${var.project}-pipeline"
  # What a state machine's role needs to deliver its logs and traces (every state machine's).
  state_machine_log_and_trace_actions = [
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
  ]
  # The source tables that become fact tables (ingest::FACT_TABLES, checked by
  # tests/tests/terraform.rs): ingested after the others, in a Map of their own.
  fact_tables = ["payment", "purchase_order", "sales_order"]
  # Long enough for every step's timeout and retries in one pass, unless set (a backfill loops
  # for longer); a run that still overruns it loses the lock to the next tick (its execution is
  # no longer RUNNING).
  execution_timeout_seconds = var.execution_timeout_seconds != null ? var.execution_timeout_seconds : 3 * (
    var.lambda_settings.ingest.timeout * (
      ceil(length(setsubtract(var.tables, local.fact_tables)) / var.map_concurrency) +
      ceil(length(setintersection(var.tables, local.fact_tables)) / var.map_concurrency)
    ) +
    var.lambda_settings.transform.timeout + var.lambda_settings.load.timeout
  )
}

resource "aws_dynamodb_table" "lock" {
  name                        = "${var.project}-pipeline-lock"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "lock_id"
  deletion_protection_enabled = true

  attribute {
    name = "lock_id"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.pipeline.arn
  }
}

resource "aws_cloudwatch_log_group" "state_machine" {
  name              = "/aws/vendedlogs/states/${local.state_machine_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_sfn_state_machine" "pipeline" {
  count    = local.use_step_functions ? 1 : 0
  name     = local.state_machine_name
  role_arn = aws_iam_role.state_machine[0].arn

  definition = templatefile("${path.module}/state_machine.asl.json", {
    project                            = var.project
    partition                          = local.partition
    lock_table                         = aws_dynamodb_table.lock.name
    topic_arn                          = aws_sns_topic.alarms.arn
    ingest_function_arn                = aws_lambda_function.pipeline["ingest"].arn
    transform_function_arn             = aws_lambda_function.pipeline["transform"].arn
    load_function_arn                  = aws_lambda_function.pipeline["load"].arn
    dimension_tables                   = jsonencode([for t in var.tables : t if !contains(local.fact_tables, t)])
    fact_tables                        = jsonencode([for t in var.tables : t if contains(local.fact_tables, t)])
    map_concurrency                    = var.map_concurrency
    execution_timeout_seconds          = local.execution_timeout_seconds
    transient_interval_seconds         = var.transient_retry.interval_seconds
    transient_max_attempts             = var.transient_retry.max_attempts
    transient_backoff_rate             = var.transient_retry.backoff_rate
    missing_dimension_interval_seconds = var.missing_dimension_retry.interval_seconds
    missing_dimension_max_attempts     = var.missing_dimension_retry.max_attempts
    missing_dimension_backoff_rate     = var.missing_dimension_retry.backoff_rate
    # The history events a round adds, roughly (ContinueAsNew), and how many an execution
    # spends before it hands over to a fresh one: Step Functions stops at 25,000.
    round_events   = length(var.tables) * 12 + 40
    history_budget = 20000
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    include_execution_data = true
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }

  # Step Functions checks at create that the role may deliver logs to the log group.
  depends_on = [aws_iam_role_policy.state_machine]
}

resource "aws_iam_role" "state_machine" {
  count              = local.use_step_functions ? 1 : 0
  name               = "${var.project}-pipeline"
  assume_role_policy = data.aws_iam_policy_document.assume["states"].json
}

data "aws_iam_policy_document" "state_machine" {
  statement {
    sid       = "InvokeThePipelineFunctions"
    actions   = ["lambda:InvokeFunction"]
    resources = flatten([for f in aws_lambda_function.pipeline : [f.arn, "${f.arn}:*"]])
  }

  statement {
    sid       = "HoldTheLock"
    actions   = ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.lock.arn]
  }

  # Near the history limit an execution starts its own continuation (ContinueAsNew); the ARN
  # is built from the name, as the state machine's own would make a cycle.
  statement {
    sid       = "StartOwnContinuation"
    actions   = ["states:StartExecution"]
    resources = ["arn:${local.partition}:states:${local.region}:${local.account_id}:stateMachine:${local.state_machine_name}"]
  }

  # Whether the execution holding the lock is still running.
  statement {
    sid       = "DescribeOwnExecutions"
    actions   = ["states:DescribeExecution"]
    resources = ["arn:${local.partition}:states:${local.region}:${local.account_id}:execution:${local.state_machine_name}:*"]
  }

  statement {
    sid       = "NotifyFailures"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
  }

  # The topic and the lock table are encrypted with the pipeline's key.
  statement {
    sid       = "UsePipelineKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.pipeline.arn]
  }

  # CloudWatch Logs delivery and X-Ray take no resource-level permissions: "*" is required.
  statement {
    sid       = "DeliverLogsAndTraces"
    actions   = local.state_machine_log_and_trace_actions
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "state_machine" {
  count  = local.use_step_functions ? 1 : 0
  name   = "${var.project}-pipeline"
  role   = aws_iam_role.state_machine[0].id
  policy = data.aws_iam_policy_document.state_machine.json
}
