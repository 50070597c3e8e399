# The three Lambdas. Each crate's config reads exactly the environment given here
# (tests/tests/terraform.rs checks it against the code).
locals {
  functions = {
    ingest = {
      description = "ToteSys tables changed since the last run -> Parquet in the ingest bucket"
      memory      = var.lambda_settings.ingest.memory
      timeout     = var.lambda_settings.ingest.timeout
      storage     = var.lambda_settings.ingest.ephemeral_storage
      # s3 mode: the schedule's asynchronous invocations wait for the run before them. Under the
      # state machine its lock serialises runs and the Map holds ingest to map_concurrency.
      concurrency = local.use_s3_triggers ? 1 : var.lambda_settings.ingest.concurrency
      environment = {
        SOURCE_DB_SECRET_ID = aws_secretsmanager_secret.db["source"].arn
        INGEST_BUCKET       = aws_s3_bucket.data["ingest"].id
        LANDING_BUCKET      = aws_s3_bucket.data["landing"].id
        # Replaces every API dataset's declared base_url (a staging portal); empty: as declared.
        API_BASE_URL              = var.api_base_url
        INGEST_SAFETY_LAG_SECONDS = tostring(var.ingest_safety_lag_seconds)
        INGEST_MAX_ROWS_PER_FILE  = tostring(var.ingest_max_rows_per_file)
        # The deployed tables: what {} ingests, and whose watermarks hold the fact tables.
        INGEST_TABLES           = join(",", var.tables)
        DEADLINE_MARGIN_SECONDS = tostring(var.deadline_margin_seconds)
        DB_SSL_ROOT_CERT        = var.db_ssl_root_cert
        AWS_LAMBDA_LOG_FORMAT   = "JSON"
        METRICS_NAMESPACE       = var.project
      }
    }
    transform = {
      description = "Raw Parquet -> star schema Parquet in the processed bucket"
      memory      = var.lambda_settings.transform.memory
      timeout     = var.lambda_settings.transform.timeout
      storage     = var.lambda_settings.transform.ephemeral_storage
      # The dimension snapshots under _state/transform/ are read, merged and written back, so
      # transforms must not overlap: in s3 mode nothing else keeps them apart; under the state
      # machine, its lock does.
      concurrency = local.use_s3_triggers ? 1 : var.lambda_settings.transform.concurrency
      environment = {
        INGEST_BUCKET           = aws_s3_bucket.data["ingest"].id
        PROCESSED_BUCKET        = aws_s3_bucket.data["processed"].id
        DEADLINE_MARGIN_SECONDS = tostring(var.deadline_margin_seconds)
        AWS_LAMBDA_LOG_FORMAT   = "JSON"
        METRICS_NAMESPACE       = var.project
      }
    }
    load = {
      description = "Processed Parquet -> the warehouse, exactly once per file"
      memory      = var.lambda_settings.load.memory
      timeout     = var.lambda_settings.load.timeout
      storage     = var.lambda_settings.load.ephemeral_storage
      # The load ledger and per-table locks make concurrent invocations safe.
      concurrency = var.lambda_settings.load.concurrency
      environment = {
        WAREHOUSE_DB_SECRET_ID  = aws_secretsmanager_secret.db["warehouse"].arn
        PROCESSED_BUCKET        = aws_s3_bucket.data["processed"].id
        LOAD_BULK_MIN_ROWS      = tostring(var.load_bulk_min_rows)
        LOAD_LOCK_TIMEOUT_MS    = tostring(var.load_lock_timeout_ms)
        DEADLINE_MARGIN_SECONDS = tostring(var.deadline_margin_seconds)
        DB_SSL_ROOT_CERT        = var.db_ssl_root_cert
        AWS_LAMBDA_LOG_FORMAT   = "JSON"
        METRICS_NAMESPACE       = var.project
      }
    }
  }
  function_names = { for name, _ in local.functions : name => "${var.project}-${name}" }
  zip_dir        = startswith(var.lambda_zip_dir, "/") ? var.lambda_zip_dir : "${path.module}/${var.lambda_zip_dir}"
}

resource "aws_cloudwatch_log_group" "lambda" {
  for_each          = local.function_names
  name              = "/aws/lambda/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.pipeline.arn
}

resource "aws_lambda_function" "pipeline" {
  # checkov:skip=CKV_AWS_272:The zips are built and deployed by the same CI job (make build && make deploy); there is no signing profile to trust.
  for_each      = local.functions
  function_name = local.function_names[each.key]
  description   = each.value.description
  role          = aws_iam_role.lambda[each.key].arn

  runtime       = "provided.al2023"
  handler       = "bootstrap"
  architectures = [var.lambda_architecture]
  filename      = "${local.zip_dir}/${each.key}/bootstrap.zip"
  # Redeploys when the zip changes.
  source_code_hash = filebase64sha256("${local.zip_dir}/${each.key}/bootstrap.zip")

  memory_size                    = each.value.memory
  timeout                        = each.value.timeout
  reserved_concurrent_executions = each.value.concurrency
  kms_key_arn                    = aws_kms_key.pipeline.arn

  # /tmp: ingest copies a landed Parquet file or workbook there to read it.
  ephemeral_storage {
    size = each.value.storage
  }

  environment {
    variables = each.value.environment
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.lambda[each.key].name
  }

  tracing_config {
    mode = "Active"
  }

  # Failed asynchronous invocations (the schedule and S3 triggers in s3 mode) end up here.
  dead_letter_config {
    target_arn = aws_sqs_queue.dead_letter.arn
  }

  dynamic "vpc_config" {
    for_each = length(var.vpc_subnet_ids) > 0 ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
  }

  # Lambda checks at create that the role may reach what the function is configured with: its
  # log group, and with vpc_config the network interfaces the VPC policy allows.
  depends_on = [aws_iam_role_policy.lambda, aws_iam_role_policy_attachment.lambda_vpc]
}

# Asynchronous invocations: two retries, then the dead-letter queue (which also keeps the status
# messages EventBridge could not deliver, monitoring.tf).
resource "aws_lambda_function_event_invoke_config" "pipeline" {
  for_each                     = aws_lambda_function.pipeline
  function_name                = each.value.function_name
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 3600
}

resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.project}-dead-letter"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.pipeline.arn
}

data "aws_iam_policy_document" "dead_letter" {
  source_policy_documents = [data.aws_iam_policy_document.tls_only["sqs"].json]

  # The status messages EventBridge could not deliver to the topic.
  dynamic "statement" {
    for_each = aws_cloudwatch_event_rule.execution_status
    content {
      sid       = "UndeliveredStatusMessages"
      actions   = ["sqs:SendMessage"]
      resources = [aws_sqs_queue.dead_letter.arn]
      principals {
        type        = "Service"
        identifiers = ["events.amazonaws.com"]
      }
      condition {
        test     = "ArnEquals"
        variable = "aws:SourceArn"
        values   = [statement.value.arn]
      }
    }
  }
}

resource "aws_sqs_queue_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  policy    = data.aws_iam_policy_document.dead_letter.json
}
