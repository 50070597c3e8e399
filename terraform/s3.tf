locals {
  bucket_suffix = var.bucket_suffix != "" ? var.bucket_suffix : local.account_id
  buckets = {
    # Where declared datasets' files land (datasets.tf).
    landing   = "${var.project}-landing-${local.bucket_suffix}"
    ingest    = "${var.project}-ingest-${local.bucket_suffix}"
    processed = "${var.project}-processed-${local.bucket_suffix}"
  }
  # The prefixes the Lambdas write data under (each crate's table registry); state and
  # quarantine objects live beside them under _state/ and quarantine/.
  source_tables = var.tables
  warehouse_tables = [
    "dim_counterparty", "dim_currency", "dim_date", "dim_design", "dim_location",
    "dim_payment_type", "dim_staff", "dim_transaction", "fact_payment", "fact_purchase_order",
    "fact_sales_order",
  ]
}

resource "aws_s3_bucket" "data" {
  # checkov:skip=CKV_AWS_18:Server access logs would need a third bucket nobody reads; object-level auditing belongs in the account's CloudTrail data events.
  # checkov:skip=CKV_AWS_144:Cross-region replication is left to the account's DR policy: the raw zone can be re-ingested and the processed zone rebuilt from it.
  for_each = local.buckets
  bucket   = each.value
}

resource "aws_s3_bucket_ownership_controls" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each                = aws_s3_bucket.data
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pipeline.arn
    }
    bucket_key_enabled = true
  }
}

# A crashed multipart upload leaves parts, never an object: clear them. Replaced state objects
# (the watermark, the dimension snapshots) keep their old versions for a while, then go. No
# rule ever expires a current data object.
resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.data]
}

# Requests without TLS are refused (the shared statement in iam.tf).
resource "aws_s3_bucket_policy" "tls_only" {
  for_each = aws_s3_bucket.data
  bucket   = each.value.id
  policy   = data.aws_iam_policy_document.tls_only["s3-${each.key}"].json

  depends_on = [aws_s3_bucket_public_access_block.data]
}

# --- S3-trigger mode ---------------------------------------------------------------------------
# Transform runs on each raw file (one notification per table prefix, so the watermark under
# _state/ never triggers it) and on each dataset file queued for it (the marker ingest puts
# after the file); load on each processed file under dim_*/, fact_*/ and the datasets'
# prefixes, never on quarantine/ or _state/.
locals {
  # bucket => the function its ObjectCreated events invoke, and the prefixes that do.
  s3_triggers = {
    ingest = {
      function = "transform"
      prefixes = concat(local.source_tables, length(local.dataset_names) > 0 ? ["_state/datasets/pending"] : [])
    }
    processed = { function = "load", prefixes = concat(local.warehouse_tables, local.dataset_names) }
  }
}

resource "aws_s3_bucket_notification" "trigger" {
  for_each = { for bucket, t in local.s3_triggers : bucket => t if local.use_s3_triggers }
  bucket   = aws_s3_bucket.data[each.key].id

  dynamic "lambda_function" {
    for_each = toset(each.value.prefixes)
    content {
      id                  = "${each.value.function}-${replace(lambda_function.value, "/", "-")}"
      lambda_function_arn = aws_lambda_function.pipeline[each.value.function].arn
      events              = ["s3:ObjectCreated:*"]
      filter_prefix       = "${lambda_function.value}/"
      filter_suffix       = ".parquet"
    }
  }

  depends_on = [aws_lambda_permission.s3_invoke]
}

resource "aws_lambda_permission" "s3_invoke" {
  for_each       = { for bucket, t in local.s3_triggers : bucket => t if local.use_s3_triggers }
  statement_id   = "s3-${each.key}-bucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.pipeline[each.value.function].function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.data[each.key].arn
  source_account = local.account_id
}
