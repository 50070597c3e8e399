# The pipeline at a glance, and an alarm per source table that falls behind.
#
# The pipeline's own figures come from the Lambdas' Embedded Metric Format log lines
# (utils::metrics), in the namespace var.project (METRICS_NAMESPACE): Rows, Bytes, ChangedRows,
# QuarantinedRows, FreshnessLagSeconds, FilesWaiting, LockTimeouts and HttpRetries by Stage and
# Table, DurationSeconds and ViewRefreshFailures by Stage.
# tests/tests/terraform.rs checks every name and dimension used here against the code.
locals {
  # The schedule's period, from a rate() expression (a cron schedule sets
  # freshness_alarm_seconds instead).
  schedule_rate = try(regex("^rate\\((\\d+) (minutes?|hours?|days?)\\)$", var.schedule_expression), null)
  schedule_seconds = local.schedule_rate == null ? null : tonumber(local.schedule_rate[0]) * lookup(
    { minute = 60, minutes = 60, hour = 3600, hours = 3600, day = 86400, days = 86400 },
    local.schedule_rate[1],
  )
  # A table is behind when the warehouse has been this far behind it: a number of schedule
  # periods.
  freshness_threshold = var.freshness_alarm_seconds != null ? var.freshness_alarm_seconds : local.schedule_seconds * var.freshness_alarm_multiple
  # The alarm looks at the best freshness over the threshold's length: one period of whole
  # minutes up to a day; past a day, every hour of it (CloudWatch evaluates up to 7 days at
  # periods of an hour or more). Behind when even the best is too old.
  freshness_period             = local.freshness_threshold <= 86400 ? max(60, ceil(local.freshness_threshold / 60) * 60) : 3600
  freshness_evaluation_periods = local.freshness_threshold <= 86400 ? 1 : ceil(local.freshness_threshold / 3600)

  # SEARCH expressions over the pipeline's metrics by stage and table.
  by_table = "{${var.project},Stage,Table}"
  dashboard_widgets = concat(
    [
      {
        type = "text", x = 0, y = 0, width = 24, height = 2
        properties = {
          markdown = "## ${var.project}: rows, time, freshness and failures per stage\nFreshness: how far the warehouse is behind each source table after every transform (its files loaded or waiting in the load's queue; alarm above ${local.freshness_threshold} s); the watermark's age after every ingest. Files waiting: raw files transform left, files left in the load's queue. `etl status` gives the same per table from a shell."
        }
      },
      {
        type = "metric", x = 0, y = 2, width = 12, height = 6
        properties = {
          title   = "Rows per table and run: ingest (read from the source)"
          region  = local.region
          view    = "timeSeries"
          stacked = true
          metrics = [[{ expression = "SEARCH('${local.by_table} MetricName=\"Rows\" Stage=\"ingest\"', 'Sum', 300)", id = "ingest_rows" }]]
        }
      },
      {
        type = "metric", x = 12, y = 2, width = 12, height = 6
        properties = {
          title   = "Rows per table and run: load (rows changed in the warehouse)"
          region  = local.region
          view    = "timeSeries"
          stacked = true
          metrics = [[{ expression = "SEARCH('${local.by_table} MetricName=\"ChangedRows\" Stage=\"load\"', 'Sum', 300)", id = "load_changed" }]]
        }
      },
      {
        type = "metric", x = 0, y = 8, width = 12, height = 6
        properties = {
          title   = "Rows and bytes written per stage"
          region  = local.region
          view    = "timeSeries"
          stacked = false
          metrics = [
            [{ expression = "SUM(SEARCH('${local.by_table} MetricName=\"Rows\"', 'Sum', 300))", id = "rows", label = "rows (all stages)" }],
            [{ expression = "SUM(SEARCH('${local.by_table} MetricName=\"Bytes\"', 'Sum', 300))", id = "bytes", label = "bytes (all stages)", yAxis = "right" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 8, width = 12, height = 6
        properties = {
          title   = "Invocation duration per stage (s, maximum)"
          region  = local.region
          view    = "timeSeries"
          stat    = "Maximum"
          period  = 300
          metrics = [for stage in ["ingest", "transform", "load"] : [var.project, "DurationSeconds", "Stage", stage]]
        }
      },
      {
        type = "metric", x = 0, y = 14, width = 12, height = 6
        properties = {
          title  = "Freshness: the warehouse's lag (transform) and the watermark's age (ingest) per source table (s)"
          region = local.region
          view   = "timeSeries"
          metrics = [
            [{ expression = "SEARCH('${local.by_table} MetricName=\"FreshnessLagSeconds\" Stage=\"transform\"', 'Maximum', 300)", id = "freshness" }],
            [{ expression = "SEARCH('${local.by_table} MetricName=\"FreshnessLagSeconds\" Stage=\"ingest\"', 'Maximum', 300)", id = "watermark_age" }],
          ]
          annotations = {
            horizontal = [{ label = "alarm", value = local.freshness_threshold }]
          }
        }
      },
      {
        type = "metric", x = 12, y = 14, width = 12, height = 6
        properties = {
          title   = "Quarantined fact rows per table"
          region  = local.region
          view    = "timeSeries"
          stacked = true
          metrics = [[{ expression = "SEARCH('${local.by_table} MetricName=\"QuarantinedRows\" Stage=\"transform\"', 'Sum', 3600)", id = "quarantined" }]]
        }
      },
      {
        type = "metric", x = 0, y = 26, width = 12, height = 6
        properties = {
          title   = "Files waiting: raw files transform left (per source table), files in the load's queue (per warehouse table)"
          region  = local.region
          view    = "timeSeries"
          stacked = true
          metrics = [
            [{ expression = "SEARCH('${local.by_table} MetricName=\"FilesWaiting\" Stage=\"transform\"', 'Maximum', 300)", id = "raw_waiting" }],
            [{ expression = "SEARCH('${local.by_table} MetricName=\"FilesWaiting\" Stage=\"load\"', 'Maximum', 300)", id = "queued" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 26, width = 12, height = 6
        properties = {
          title   = "The warehouse: files rolled back on a lock wait (retried), failed view refreshes (the view stays pending)"
          region  = local.region
          view    = "timeSeries"
          stacked = false
          metrics = [
            [{ expression = "SEARCH('${local.by_table} MetricName=\"LockTimeouts\" Stage=\"load\"', 'Sum', 300)", id = "lock_timeouts" }],
            [var.project, "ViewRefreshFailures", "Stage", "load", { stat = "Sum", period = 300, id = "view_refresh_failures", label = "failed view refreshes" }],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 32, width = 12, height = 6
        properties = {
          title   = "API sources: requests tried again after a throttle (429), a 5xx or a timeout, per dataset"
          region  = local.region
          view    = "timeSeries"
          stacked = true
          metrics = [[{ expression = "SEARCH('${local.by_table} MetricName=\"HttpRetries\" Stage=\"ingest\"', 'Sum', 300)", id = "http_retries" }]]
        }
      },
      {
        type = "metric", x = 0, y = 20, width = 12, height = 6
        properties = {
          title  = "Errors: failed invocations (retried ones too) and throttles"
          region = local.region
          view   = "timeSeries"
          stat   = "Sum"
          period = 300
          metrics = concat(
            [for key, name in local.function_names : ["AWS/Lambda", "Errors", "FunctionName", name, { label = "${key} errors" }]],
            [for key, name in local.function_names : ["AWS/Lambda", "Throttles", "FunctionName", name, { label = "${key} throttles" }]],
          )
        }
      },
    ],
    local.use_step_functions ? [
      {
        type = "metric", x = 12, y = 20, width = 12, height = 6
        properties = {
          title  = "Step Functions executions"
          region = local.region
          view   = "timeSeries"
          stat   = "Sum"
          period = 300
          metrics = [
            for metric in ["ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted", "ExecutionThrottled"] :
            ["AWS/States", metric, "StateMachineArn", one(aws_sfn_state_machine.pipeline[*].arn)]
          ]
        }
      },
    ] : [],
  )
}

resource "aws_cloudwatch_dashboard" "pipeline" {
  dashboard_name = var.project
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}

# One alarm per source table: the warehouse has been behind it by more than freshness_threshold
# (a number of schedule periods). Missing data is neither good nor bad: a new alarm waits in
# INSUFFICIENT_DATA for the first run's figures instead of firing before it, and one whose
# table no transform has reported for the whole window goes back to INSUFFICIENT_DATA, which
# is notified while the schedule is on.
resource "aws_cloudwatch_metric_alarm" "freshness" {
  for_each                  = toset(local.source_tables)
  alarm_name                = "${var.project}-freshness-${each.key}"
  alarm_description         = "Source table ${each.key} is behind: the warehouse has lagged it by more than ${local.freshness_threshold} s (not read, not transformed, or waiting in the load's queue), or (INSUFFICIENT_DATA) no transform has reported it for that long. Run `etl status` to see where, and the pipeline's failure messages for why."
  namespace                 = var.project
  metric_name               = "FreshnessLagSeconds"
  dimensions                = { Stage = "transform", Table = each.key }
  statistic                 = "Minimum"
  period                    = local.freshness_period
  evaluation_periods        = local.freshness_evaluation_periods
  datapoints_to_alarm       = local.freshness_evaluation_periods
  comparison_operator       = "GreaterThanThreshold"
  threshold                 = local.freshness_threshold
  treat_missing_data        = var.schedule_enabled ? "missing" : "notBreaching"
  alarm_actions             = [aws_sns_topic.alarms.arn]
  ok_actions                = [aws_sns_topic.alarms.arn]
  insufficient_data_actions = var.schedule_enabled ? [aws_sns_topic.alarms.arn] : []
}
