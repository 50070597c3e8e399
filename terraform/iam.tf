# One role per function, each allowed only its own buckets, prefixes and secret.
locals {
  bucket_arn = { for k, b in aws_s3_bucket.data : k => b.arn }
  # Raw data under <source table>/, the ingest watermarks under _state/ingest/.
  raw_objects      = [for t in local.source_tables : "${local.bucket_arn.ingest}/${t}/*"]
  ingest_state     = "${local.bucket_arn.ingest}/_state/ingest/*"
  star_objects     = [for t in local.warehouse_tables : "${local.bucket_arn.processed}/${t}/*"]
  transform_extras = ["${local.bucket_arn.processed}/quarantine/*", "${local.bucket_arn.processed}/_state/transform/*"]
  # The load's queue: transform puts a marker per processed file, load deletes it once loaded.
  load_queue = "${local.bucket_arn.processed}/_state/pending/*"
  # Declared datasets (datasets.tf): their landing prefixes, their typed files in each zone,
  # ingest's records and quarantine, and transform's queue of their files.
  landing_objects   = [for d in values(local.file_datasets) : "${local.bucket_arn.landing}/${d.source.prefix}*"]
  dataset_raw       = [for n in local.dataset_names : "${local.bucket_arn.ingest}/${n}/*"]
  dataset_processed = [for n in local.dataset_names : "${local.bucket_arn.processed}/${n}/*"]
  dataset_ingest_state = concat(
    [for n in local.dataset_names : "${local.bucket_arn.ingest}/_state/datasets/${n}/*"],
    [for n in local.dataset_names : "${local.bucket_arn.ingest}/quarantine/${n}/*"],
  )
  dataset_queue = "${local.bucket_arn.ingest}/_state/datasets/pending/*"

  lambda_statements = {
    ingest = concat([
      {
        sid       = "ReadSourceSecret"
        actions   = ["secretsmanager:GetSecretValue"]
        resources = [aws_secretsmanager_secret.db["source"].arn]
      },
      {
        # Without ListBucket a missing watermark answers 403 instead of 404.
        sid       = "ListIngestBucket"
        actions   = ["s3:ListBucket"]
        resources = [local.bucket_arn.ingest]
      },
      {
        sid       = "WriteRawFilesAndWatermarks"
        actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
        resources = concat(local.raw_objects, [local.ingest_state])
      },
      {
        sid       = "ListLandingBucket"
        actions   = ["s3:ListBucket"]
        resources = [local.bucket_arn.landing]
      },
      {
        # A file that cannot be read has its parts deleted (nothing half-written stays).
        sid       = "WriteDatasetFilesRecordsAndQuarantine"
        actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        resources = concat(local.dataset_raw, local.dataset_ingest_state, [local.dataset_queue])
      },
      ], length(local.landing_objects) > 0 ? [
      {
        sid       = "ReadLandedFiles"
        actions   = ["s3:GetObject"]
        resources = local.landing_objects
      },
      ] : [], length(aws_secretsmanager_secret.api_token) > 0 ? [
      {
        # The API datasets' app tokens (dataset_api.tf).
        sid       = "ReadApiTokens"
        actions   = ["secretsmanager:GetSecretValue"]
        resources = [for s in aws_secretsmanager_secret.api_token : s.arn]
      },
    ] : [])
    transform = [
      {
        sid       = "ListBuckets"
        actions   = ["s3:ListBucket"]
        resources = [local.bucket_arn.ingest, local.bucket_arn.processed]
      },
      {
        # The watermarks bound what transform takes: ingest's commit of its files.
        sid       = "ReadRawFilesAndWatermarks"
        actions   = ["s3:GetObject"]
        resources = concat(local.raw_objects, [local.ingest_state])
      },
      {
        sid       = "WriteStarSchemaQuarantineSnapshotsAndCursor"
        actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
        resources = concat(local.star_objects, local.transform_extras)
      },
      {
        sid       = "QueueProcessedFiles"
        actions   = ["s3:PutObject"]
        resources = [local.load_queue]
      },
      {
        # Dataset files are copied from the raw zone to the processed zone, off its queue.
        sid       = "PublishDatasetFiles"
        actions   = ["s3:GetObject", "s3:PutObject"]
        resources = concat(local.dataset_raw, local.dataset_processed)
      },
      {
        sid       = "TakeDatasetFilesOffTheQueue"
        actions   = ["s3:DeleteObject"]
        resources = [local.dataset_queue]
      },
    ]
    load = [
      {
        sid       = "ReadWarehouseSecret"
        actions   = ["secretsmanager:GetSecretValue"]
        resources = [aws_secretsmanager_secret.db["warehouse"].arn]
      },
      {
        sid       = "ListProcessedBucket"
        actions   = ["s3:ListBucket"]
        resources = [local.bucket_arn.processed]
      },
      {
        sid       = "ReadStarSchemaFiles"
        actions   = ["s3:GetObject"]
        resources = concat(local.star_objects, local.dataset_processed)
      },
      {
        sid       = "TakeFilesOffTheQueue"
        actions   = ["s3:DeleteObject"]
        resources = [local.load_queue]
      },
    ]
  }
}

# Who may assume the pipeline's roles: each service, for this account only.
data "aws_iam_policy_document" "assume" {
  for_each = toset(["lambda", "states", "events"])
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["${each.key}.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "lambda" {
  for_each           = local.functions
  name               = "${var.project}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume["lambda"].json
}

data "aws_iam_policy_document" "lambda" {
  for_each = local.functions

  dynamic "statement" {
    for_each = local.lambda_statements[each.key]
    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda[each.key].arn}:*"]
  }

  # Declared datasets' encrypted fields (datasets.tf): ingest decrypts their data keys with
  # the declared master keys only, each named by its ARN or by its alias.
  dynamic "statement" {
    for_each = each.key == "ingest" && length(local.dataset_kms_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptDatasetDataKeys"
      actions   = ["kms:Decrypt", "kms:DescribeKey"]
      resources = local.dataset_kms_arns
    }
  }

  dynamic "statement" {
    for_each = each.key == "ingest" && length(local.dataset_kms_aliases) > 0 ? [1] : []
    content {
      sid       = "DecryptDatasetDataKeysByAlias"
      actions   = ["kms:Decrypt", "kms:DescribeKey"]
      resources = ["arn:${local.partition}:kms:${local.region}:${local.account_id}:key/*"]
      condition {
        test     = "StringEquals"
        variable = "kms:RequestAlias"
        values   = local.dataset_kms_aliases
      }
    }
  }

  # S3 objects, the secret and the dead-letter queue are encrypted with the pipeline's key.
  statement {
    sid       = "UsePipelineKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.pipeline.arn]
  }

  statement {
    sid       = "SendFailedAsyncEvents"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.dead_letter.arn]
  }

  # X-Ray has no resource-level permissions: "*" is the only resource it accepts.
  statement {
    sid       = "Tracing"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "lambda" {
  for_each = local.functions
  name     = "${var.project}-${each.key}"
  role     = aws_iam_role.lambda[each.key].id
  policy   = data.aws_iam_policy_document.lambda[each.key].json
}

# Network interfaces in the databases' VPC, only when vpc_subnet_ids is set.
resource "aws_iam_role_policy_attachment" "lambda_vpc" {
  for_each   = length(var.vpc_subnet_ids) > 0 ? local.function_names : {}
  role       = aws_iam_role.lambda[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

# Every resource policy (the buckets, the dead-letter queue, the alarm topic) refuses requests
# that do not use TLS.
locals {
  tls_only = merge(
    { for key, bucket in aws_s3_bucket.data : "s3-${key}" => { service = "s3", resources = [bucket.arn, "${bucket.arn}/*"] } },
    {
      s3-athena-results = {
        service   = "s3"
        resources = [aws_s3_bucket.athena_results.arn, "${aws_s3_bucket.athena_results.arn}/*"]
      }
      sqs = { service = "sqs", resources = [aws_sqs_queue.dead_letter.arn] }
      sns = { service = "sns", resources = [aws_sns_topic.alarms.arn] }
    },
  )
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.tls_only
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["${each.value.service}:*"]
    resources = each.value.resources
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

# Operators running `etl` (crates/etl) against this deployment: read both buckets and the
# database secrets (status, quarantine, the snapshots' comparison), and write only the state
# objects the command moves (ingest's watermarks and transform's cursor for a replay,
# transform's snapshots for a rebuild), holding the pipeline's lock. Output
# operator_policy_arn.
resource "aws_iam_policy" "operator" {
  name        = "${var.project}-operator"
  description = "What the etl command needs: read the pipeline's buckets and database secrets, write its state objects."
  policy      = data.aws_iam_policy_document.operator.json
}

data "aws_iam_policy_document" "operator" {
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn.ingest, local.bucket_arn.processed]
  }

  statement {
    sid       = "ReadEverything"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn.ingest}/*", "${local.bucket_arn.processed}/*"]
  }

  statement {
    sid       = "WriteStateObjects"
    actions   = ["s3:PutObject"]
    resources = [local.ingest_state, "${local.bucket_arn.processed}/_state/transform/*"]
  }

  statement {
    sid       = "ReadDatabaseSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for s in aws_secretsmanager_secret.db : s.arn]
  }

  # replay and rebuild-snapshots hold the pipeline's lock while they move its state.
  statement {
    sid       = "TakeThePipelinesLock"
    actions   = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.lock.arn]
  }

  statement {
    sid       = "UsePipelineKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.pipeline.arn]
  }
}
