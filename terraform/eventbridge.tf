# The schedule. step_functions mode: it starts the state machine, whose lock makes a tick that
# finds a run still going end at once. s3 mode: it invokes ingest asynchronously, whose reserved
# concurrency of 1 holds a second tick back until the first run is done.
resource "aws_cloudwatch_event_rule" "schedule" {
  name                = "${var.project}-schedule"
  description         = "Runs the ${var.project} pipeline"
  schedule_expression = var.schedule_expression
  state               = var.schedule_enabled ? "ENABLED" : "DISABLED"
}

resource "aws_cloudwatch_event_target" "state_machine" {
  count    = local.use_step_functions ? 1 : 0
  rule     = aws_cloudwatch_event_rule.schedule.name
  arn      = aws_sfn_state_machine.pipeline[0].arn
  role_arn = aws_iam_role.schedule[0].arn
  input    = "{}"
}

resource "aws_cloudwatch_event_target" "ingest" {
  count = local.use_s3_triggers ? 1 : 0
  rule  = aws_cloudwatch_event_rule.schedule.name
  arn   = aws_lambda_function.pipeline["ingest"].arn
  input = "{}"
}

resource "aws_lambda_permission" "schedule_invokes_ingest" {
  count         = local.use_s3_triggers ? 1 : 0
  statement_id  = "schedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.pipeline["ingest"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule.arn
}

resource "aws_iam_role" "schedule" {
  count              = local.use_step_functions ? 1 : 0
  name               = "${var.project}-schedule"
  assume_role_policy = data.aws_iam_policy_document.assume["events"].json
}

data "aws_iam_policy_document" "schedule" {
  count = local.use_step_functions ? 1 : 0
  statement {
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.pipeline[0].arn]
  }
}

resource "aws_iam_role_policy" "schedule" {
  count  = local.use_step_functions ? 1 : 0
  name   = "${var.project}-schedule"
  role   = aws_iam_role.schedule[0].id
  policy = data.aws_iam_policy_document.schedule[0].json
}
