# Everything that needs a person goes to one topic: alarms, the state machine's own failure
# message (with the error and its cause), and every execution's final status.
resource "aws_sns_topic" "alarms" {
  name              = "${var.project}-alarms"
  kms_master_key_id = aws_kms_key.pipeline.arn
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email != "" ? 1 : 0
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "AlarmsAndEventsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "AccountManagesTheTopic"
    actions   = ["sns:Publish", "sns:Subscribe", "sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:ListSubscriptionsByTopic"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

locals {
  alarm_actions = [aws_sns_topic.alarms.arn]
}

# --- Lambdas: ERROR log lines and failed invocations ---------------------------------------
# Every failed invocation logs one JSON line with "level": "ERROR" (utils::lambda::serve).
resource "aws_cloudwatch_log_metric_filter" "error_lines" {
  for_each       = aws_cloudwatch_log_group.lambda
  name           = "${each.value.name}-errors"
  log_group_name = each.value.name
  pattern        = "{ $.level = \"ERROR\" }"

  metric_transformation {
    name          = "ErrorLogLines-${each.key}"
    namespace     = var.project
    value         = "1"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "error_lines" {
  for_each            = local.function_names
  alarm_name          = "${each.value}-error-log-lines"
  alarm_description   = "${each.value} logged an ERROR line: see its log group."
  namespace           = var.project
  metric_name         = "ErrorLogLines-${each.key}"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  for_each            = local.function_names
  alarm_name          = "${each.value}-errors"
  alarm_description   = "${each.value} returned errors (after any Step Functions retry, each attempt counts)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# --- Quarantined fact rows ----------------------------------------------------------------------
# transform logs {"message": "fact rows quarantined", "rows": N, ...} per quarantined file.
resource "aws_cloudwatch_log_metric_filter" "quarantined_rows" {
  name           = "${var.project}-quarantined-rows"
  log_group_name = aws_cloudwatch_log_group.lambda["transform"].name
  pattern        = "{ $.message = \"fact rows quarantined\" }"

  metric_transformation {
    name          = "QuarantinedRows"
    namespace     = var.project
    value         = "$.rows"
    default_value = "0"
    unit          = "Count"
  }
}

resource "aws_cloudwatch_metric_alarm" "quarantined_rows" {
  alarm_name          = "${var.project}-quarantined-rows"
  alarm_description   = "transform quarantined fact rows: read them under quarantine/ in the processed bucket (README, Operations)."
  namespace           = var.project
  metric_name         = "QuarantinedRows"
  statistic           = "Sum"
  period              = 3600
  evaluation_periods  = 1
  threshold           = var.quarantined_rows_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# --- Dead-letter queue (asynchronous invocations in s3 mode) ------------------------------------
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.project}-dead-letters"
  alarm_description   = "An asynchronous invocation failed every retry and is in the dead-letter queue."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# --- Step Functions ---------------------------------------------------------------------------
resource "aws_cloudwatch_metric_alarm" "executions" {
  for_each = local.use_step_functions ? toset(["ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"]) : toset([])

  alarm_name          = "${local.state_machine_name}-${each.key}"
  alarm_description   = "A ${local.state_machine_name} execution ended badly (${each.key}): see its execution history."
  namespace           = "AWS/States"
  metric_name         = each.key
  dimensions          = { StateMachineArn = aws_sfn_state_machine.pipeline[0].arn }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

# Each run's final status, pushed to the topic so nobody polls.
resource "aws_cloudwatch_event_rule" "execution_status" {
  count       = local.use_step_functions ? 1 : 0
  name        = "${var.project}-execution-status"
  description = "Final status of every ${local.state_machine_name} execution"
  event_pattern = jsonencode({
    source        = ["aws.states"]
    "detail-type" = ["Step Functions Execution Status Change"]
    detail = {
      stateMachineArn = [aws_sfn_state_machine.pipeline[0].arn]
      status          = ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]
    }
  })
}

resource "aws_cloudwatch_event_target" "execution_status" {
  count = local.use_step_functions ? 1 : 0
  rule  = aws_cloudwatch_event_rule.execution_status[0].name
  arn   = aws_sns_topic.alarms.arn

  input_transformer {
    input_paths = {
      name   = "$.detail.name"
      status = "$.detail.status"
      arn    = "$.detail.executionArn"
      output = "$.detail.output"
    }
    input_template = "\"${local.state_machine_name} execution <name>: <status>. Output: <output>. Details: <arn>\""
  }
}
