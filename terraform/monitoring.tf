# Everything that needs a person goes to one topic: alarms, the state machine's own failure
# message (with the error and its cause), and every execution that failed, timed out or was
# aborted.
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
  source_policy_documents = [data.aws_iam_policy_document.tls_only["sns"].json]

  statement {
    sid       = "AlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # EventBridge's execution-status messages. Its user guide: condition blocks are not
  # supported in SNS topic policies for EventBridge, so this statement has none (with one,
  # every message is refused, retried for an hour and dead-lettered).
  statement {
    sid       = "EventsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
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
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
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




# --- Alarms ------------------------------------------------------------------------------------
locals {
  lambda_alarms = merge([
    for key, name in local.function_names : {
      "${name}-errors" = {
        description = "${name} returned errors (each attempt counts, retried ones too)."
        namespace   = "AWS/Lambda"
        metric      = "Errors"
        dimensions  = { FunctionName = name }
        statistic   = "Sum"
        period      = 300
        threshold   = 0
      }
      "${name}-error-log-lines" = {
        description = "${name} logged an ERROR line: see its log group."
        namespace   = var.project
        metric      = "ErrorLogLines-${key}"
        dimensions  = {}
        statistic   = "Sum"
        period      = 300
        threshold   = 0
      }
    }
  ]...)
  execution_alarms = {
    for metric in ["ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"] :
    "${local.state_machine_name}-${metric}" => {
      description = "A ${local.state_machine_name} execution ended badly (${metric}): see its execution history."
      namespace   = "AWS/States"
      metric      = metric
      dimensions  = { StateMachineArn = one(aws_sfn_state_machine.pipeline[*].arn) }
      statistic   = "Sum"
      period      = 300
      threshold   = 0
    } if local.use_step_functions
  }
  # A rule whose target could not be reached: a schedule tick that started nothing, or a status
  # message that went to the dead-letter queue after its retries.
  event_rule_alarms = {
    for rule in concat([aws_cloudwatch_event_rule.schedule], aws_cloudwatch_event_rule.execution_status) :
    "${rule.name}-failed-invocations" => {
      description = "EventBridge rule ${rule.name} could not deliver to its target: see its FailedInvocations and the dead-letter queue."
      namespace   = "AWS/Events"
      metric      = "FailedInvocations"
      dimensions  = { RuleName = rule.name }
      statistic   = "Sum"
      period      = 300
      threshold   = 0
    }
  }
  alarms = merge(local.lambda_alarms, local.execution_alarms, local.event_rule_alarms, {
    "${var.project}-quarantined-rows" = {
      description = "transform quarantined fact rows: read them under quarantine/ in the processed bucket (docs/src/operations.md, Reading quarantine)."
      namespace   = var.project
      metric      = "QuarantinedRows"
      dimensions  = {}
      statistic   = "Sum"
      period      = 3600
      threshold   = var.quarantined_rows_threshold
    }
    "${var.project}-view-refresh-failures" = {
      description = "The load could not refresh a materialized view (its query failed on the new data, or a lock wait outlasted load_lock_timeout_ms): the files are committed, the view is stale until a refresh succeeds. The load's log and output (failed_views) name the view and the error."
      namespace   = var.project
      metric      = "ViewRefreshFailures"
      dimensions  = { Stage = "load" }
      statistic   = "Sum"
      period      = 300
      threshold   = 0
    }
    "${var.project}-dead-letters" = {
      description = "An asynchronous invocation (s3 mode) failed every retry, or a status message could not be delivered: it is in the dead-letter queue."
      namespace   = "AWS/SQS"
      metric      = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.dead_letter.name }
      statistic   = "Maximum"
      period      = 300
      threshold   = 0
    }
  })
}

resource "aws_cloudwatch_metric_alarm" "pipeline" {
  for_each            = local.alarms
  alarm_name          = each.key
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
}

# Each run that did not succeed, of every state machine (the pipeline's, the datasets' first
# loads, the API datasets' windows), pushed to the topic so nobody polls (a success every few
# minutes would bury them).
locals {
  watched_state_machines = concat(
    aws_sfn_state_machine.pipeline[*].arn,
    aws_sfn_state_machine.dataset_backfill[*].arn,
    aws_sfn_state_machine.dataset_api[*].arn,
  )
  any_state_machine = local.use_step_functions || local.any_dataset == 1 ? 1 : 0
}

resource "aws_cloudwatch_event_rule" "execution_status" {
  count       = local.any_state_machine
  name        = "${var.project}-execution-status"
  description = "Every execution of the ${var.project} state machines that failed, timed out or was aborted"
  event_pattern = jsonencode({
    source        = ["aws.states"]
    "detail-type" = ["Step Functions Execution Status Change"]
    detail = {
      stateMachineArn = local.watched_state_machines
      status          = ["FAILED", "TIMED_OUT", "ABORTED"]
    }
  })
}

resource "aws_cloudwatch_event_target" "execution_status" {
  count = local.any_state_machine
  rule  = aws_cloudwatch_event_rule.execution_status[0].name
  arn   = aws_sns_topic.alarms.arn

  # A message the topic refuses is retried for an hour, then kept in the dead-letter queue
  # (which alarms) instead of being dropped.
  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 24
  }

  dead_letter_config {
    arn = aws_sqs_queue.dead_letter.arn
  }

  input_transformer {
    # Only fields without quotes: the message is a JSON string. The output and the cause of a
    # failure are in the execution's history (and the failure message the run itself sends).
    input_paths = {
      name   = "$.detail.name"
      status = "$.detail.status"
      error  = "$.detail.error"
      arn    = "$.detail.executionArn"
      of     = "$.detail.stateMachineArn"
    }
    input_template = "\"Execution <name> of <of>: <status> <error>. Details: <arn>\""
  }
}
