# The lake, queryable with Athena: both zones' Parquet as tables of one Glue Data Catalog
# database, an Athena workgroup to query them in, and a read-only policy for analysts.
#
# Tables: raw_<source table> over the raw zone (ingest bucket), one per warehouse table over the
# processed zone. Their columns are exactly those of the files the code writes (the registries
# utils::tables and utils::warehouse; tests/tests/terraform.rs checks both, and the Parquet
# types Athena reads each column from). Partition projection maps the key layout
# table/YYYY/MM/DD/HHMMSSffffff.parquet to one partition column, dt ('yyyy/MM/dd', UTC, the day
# of the run that wrote the file): a new file is visible to the next query, without crawlers or
# MSCK REPAIR TABLE.
#
# Each zone keeps every file ever written: a fact row per version of a source row, a dimension
# row each time it changed. docs/src/asking.md shows how to read the current rows.
locals {
  lake_database = replace("${var.project}_lake", "-", "_")

  # Hive has no time type: a time column (Parquet INT64 TIME(MICROS)) is a bigint of
  # microseconds since midnight, which Athena's Parquet reader reads as such.
  raw_columns = {
    address = [
      ["address_id", "int"], ["address_line_1", "string"], ["address_line_2", "string"],
      ["district", "string"], ["city", "string"], ["postal_code", "string"], ["country", "string"],
      ["phone", "string"], ["created_at", "timestamp"], ["last_updated", "timestamp"],
    ]
    counterparty = [
      ["counterparty_id", "int"], ["counterparty_legal_name", "string"],
      ["legal_address_id", "int"], ["commercial_contact", "string"], ["delivery_contact", "string"],
      ["created_at", "timestamp"], ["last_updated", "timestamp"],
    ]
    currency = [
      ["currency_id", "int"], ["currency_code", "string"], ["created_at", "timestamp"],
      ["last_updated", "timestamp"],
    ]
    department = [
      ["department_id", "int"], ["department_name", "string"], ["location", "string"],
      ["manager", "string"], ["created_at", "timestamp"], ["last_updated", "timestamp"],
    ]
    design = [
      ["design_id", "int"], ["created_at", "timestamp"], ["design_name", "string"],
      ["file_location", "string"], ["file_name", "string"], ["last_updated", "timestamp"],
    ]
    payment = [
      ["payment_id", "int"], ["created_at", "timestamp"], ["last_updated", "timestamp"],
      ["transaction_id", "int"], ["counterparty_id", "int"], ["payment_amount", "decimal(10,2)"],
      ["currency_id", "int"], ["payment_type_id", "int"], ["paid", "boolean"],
      ["payment_date", "string"], ["company_ac_number", "int"], ["counterparty_ac_number", "int"],
    ]
    payment_type = [
      ["payment_type_id", "int"], ["payment_type_name", "string"], ["created_at", "timestamp"],
      ["last_updated", "timestamp"],
    ]
    purchase_order = [
      ["purchase_order_id", "int"], ["created_at", "timestamp"], ["last_updated", "timestamp"],
      ["staff_id", "int"], ["counterparty_id", "int"], ["item_code", "string"],
      ["item_quantity", "int"], ["item_unit_price", "decimal(10,2)"], ["currency_id", "int"],
      ["agreed_delivery_date", "string"], ["agreed_payment_date", "string"],
      ["agreed_delivery_location_id", "int"],
    ]
    sales_order = [
      ["sales_order_id", "int"], ["created_at", "timestamp"], ["last_updated", "timestamp"],
      ["design_id", "int"], ["staff_id", "int"], ["counterparty_id", "int"], ["units_sold", "int"],
      ["unit_price", "decimal(10,2)"], ["currency_id", "int"], ["agreed_delivery_date", "string"],
      ["agreed_payment_date", "string"], ["agreed_delivery_location_id", "int"],
    ]
    staff = [
      ["staff_id", "int"], ["first_name", "string"], ["last_name", "string"],
      ["department_id", "int"], ["email_address", "string"], ["created_at", "timestamp"],
      ["last_updated", "timestamp"],
    ]
    transaction = [
      ["transaction_id", "int"], ["transaction_type", "string"], ["sales_order_id", "int"],
      ["purchase_order_id", "int"], ["created_at", "timestamp"], ["last_updated", "timestamp"],
    ]
  }

  processed_columns = {
    dim_date = [
      ["date_id", "date"], ["year", "int"], ["month", "int"], ["day", "int"],
      ["day_of_week", "int"], ["day_name", "string"], ["month_name", "string"], ["quarter", "int"],
    ]
    dim_staff = [
      ["staff_id", "int"], ["first_name", "string"], ["last_name", "string"],
      ["department_name", "string"], ["location", "string"], ["email_address", "string"],
      ["last_updated", "timestamp"], ["department_last_updated", "timestamp"],
    ]
    dim_location = [
      ["location_id", "int"], ["address_line_1", "string"], ["address_line_2", "string"],
      ["district", "string"], ["city", "string"], ["postal_code", "string"], ["country", "string"],
      ["phone", "string"], ["last_updated", "timestamp"],
    ]
    dim_currency = [
      ["currency_id", "int"], ["currency_code", "string"], ["currency_name", "string"],
      ["last_updated", "timestamp"],
    ]
    dim_design = [
      ["design_id", "int"], ["design_name", "string"], ["file_location", "string"],
      ["file_name", "string"], ["last_updated", "timestamp"],
    ]
    dim_counterparty = [
      ["counterparty_id", "int"], ["counterparty_legal_name", "string"],
      ["counterparty_legal_address_line_1", "string"],
      ["counterparty_legal_address_line_2", "string"], ["counterparty_legal_district", "string"],
      ["counterparty_legal_city", "string"], ["counterparty_legal_postal_code", "string"],
      ["counterparty_legal_country", "string"], ["counterparty_legal_phone_number", "string"],
      ["last_updated", "timestamp"], ["legal_address_last_updated", "timestamp"],
    ]
    dim_payment_type = [
      ["payment_type_id", "int"], ["payment_type_name", "string"], ["last_updated", "timestamp"],
    ]
    dim_transaction = [
      ["transaction_id", "int"], ["transaction_type", "string"], ["sales_order_id", "int"],
      ["purchase_order_id", "int"], ["last_updated", "timestamp"],
    ]
    fact_sales_order = [
      ["sales_order_id", "int"], ["created_date", "date"], ["created_time", "bigint"],
      ["last_updated_date", "date"], ["last_updated_time", "bigint"], ["sales_staff_id", "int"],
      ["counterparty_id", "int"], ["units_sold", "int"], ["unit_price", "decimal(10,2)"],
      ["currency_id", "int"], ["design_id", "int"], ["agreed_payment_date", "date"],
      ["agreed_delivery_date", "date"], ["agreed_delivery_location_id", "int"],
    ]
    fact_purchase_order = [
      ["purchase_order_id", "int"], ["created_date", "date"], ["created_time", "bigint"],
      ["last_updated_date", "date"], ["last_updated_time", "bigint"], ["staff_id", "int"],
      ["counterparty_id", "int"], ["item_code", "string"], ["item_quantity", "int"],
      ["item_unit_price", "decimal(10,2)"], ["currency_id", "int"],
      ["agreed_delivery_date", "date"], ["agreed_payment_date", "date"],
      ["agreed_delivery_location_id", "int"],
    ]
    fact_payment = [
      ["payment_id", "int"], ["created_date", "date"], ["created_time", "bigint"],
      ["last_updated_date", "date"], ["last_updated_time", "bigint"], ["transaction_id", "int"],
      ["counterparty_id", "int"], ["payment_amount", "decimal(10,2)"], ["currency_id", "int"],
      ["payment_type_id", "int"], ["paid", "boolean"], ["payment_date", "date"],
    ]
  }

  lake_tables = merge(
    { for t in local.source_tables : "raw_${t}" => { bucket = "ingest", prefix = t, columns = local.raw_columns[t] } },
    { for t in local.warehouse_tables : t => { bucket = "processed", prefix = t, columns = local.processed_columns[t] } },
  )
}

resource "aws_glue_catalog_database" "lake" {
  name        = local.lake_database
  description = "${var.project}: the raw zone (raw_*) and the processed star schema as Parquet."
}

resource "aws_glue_catalog_table" "lake" {
  for_each      = local.lake_tables
  name          = each.key
  database_name = aws_glue_catalog_database.lake.name
  description   = "s3://${aws_s3_bucket.data[each.value.bucket].id}/${each.value.prefix}/: every file the pipeline wrote, partitioned by day."
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                      = "TRUE"
    classification                = "parquet"
    "projection.enabled"          = "true"
    "projection.dt.type"          = "date"
    "projection.dt.format"        = "yyyy/MM/dd"
    "projection.dt.range"         = "${var.lake_first_day},NOW"
    "projection.dt.interval"      = "1"
    "projection.dt.interval.unit" = "DAYS"
    "storage.location.template"   = "s3://${aws_s3_bucket.data[each.value.bucket].id}/${each.value.prefix}/$${dt}/"
  }

  partition_keys {
    name    = "dt"
    type    = "string"
    comment = "The day of the run that wrote the file, yyyy/MM/dd (UTC): filter on it to read less."
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.data[each.value.bucket].id}/${each.value.prefix}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = each.value.columns
      content {
        name = columns.value[0]
        type = columns.value[1]
      }
    }
  }
}

# Query results: their own bucket, encrypted with the pipeline's key, expired after
# athena_results_days.
resource "aws_s3_bucket" "athena_results" {
  # checkov:skip=CKV_AWS_18:Access logs of query results would need another bucket; Athena's own query history and CloudTrail record who ran what.
  # checkov:skip=CKV_AWS_144:Query results are disposable (they expire): nothing to replicate.
  # checkov:skip=CKV_AWS_21:Results are written once and expire; versions would only keep them longer.
  # checkov:skip=CKV2_AWS_62:Nothing reacts to query results: no event notifications.
  bucket = "${var.project}-athena-results-${local.bucket_suffix}"
}

resource "aws_s3_bucket_ownership_controls" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "athena_results" {
  bucket                  = aws_s3_bucket.athena_results.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.pipeline.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "athena_results" {
  bucket = aws_s3_bucket.athena_results.id

  rule {
    id     = "expire-query-results"
    status = "Enabled"
    filter {}
    expiration {
      days = var.athena_results_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

resource "aws_s3_bucket_policy" "athena_results_tls_only" {
  bucket     = aws_s3_bucket.athena_results.id
  policy     = data.aws_iam_policy_document.tls_only["s3-athena-results"].json
  depends_on = [aws_s3_bucket_public_access_block.athena_results]
}

# The workgroup's settings override the client's: results always go to the bucket above,
# encrypted, and a query stops once it has scanned athena_bytes_scanned_cutoff_per_query.
resource "aws_athena_workgroup" "lake" {
  name        = var.project
  description = "${var.project}: queries over the ${local.lake_database} Glue database."

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.athena_bytes_scanned_cutoff_per_query

    engine_version {
      selected_engine_version = "Athena engine version 3"
    }

    result_configuration {
      output_location       = "s3://${aws_s3_bucket.athena_results.id}/"
      expected_bucket_owner = local.account_id

      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.pipeline.arn
      }
    }
  }
}

# The workgroup's total per day, beside the per-query cutoff: an alarm on the topic when the
# queries of one day scan more than athena_daily_bytes_scanned_alarm (null: no alarm), below.
locals {
  # The final states of a query that read data: a cancelled one may have hit the cutoff.
  # Athena's API spells it CANCELLED and its metrics documentation CANCELED: both are summed
  # (a series that does not exist adds 0).
  athena_query_states = ["SUCCEEDED", "FAILED", "CANCELLED", "CANCELED"]
}

# Analysts: query in the workgroup, read the catalog and both zones' data files (not the
# pipeline's state or quarantine objects), write results to the results bucket. Nothing else.
resource "aws_iam_policy" "analyst" {
  name        = "${var.project}-analyst"
  description = "Read-only access to the ${local.lake_database} lake through the ${aws_athena_workgroup.lake.name} Athena workgroup."
  policy      = data.aws_iam_policy_document.analyst.json
}

data "aws_iam_policy_document" "analyst" {
  statement {
    sid = "QueryInTheWorkgroup"
    actions = [
      "athena:StartQueryExecution", "athena:StopQueryExecution", "athena:GetQueryExecution",
      "athena:GetQueryResults", "athena:GetQueryResultsStream", "athena:GetQueryRuntimeStatistics",
      "athena:ListQueryExecutions", "athena:BatchGetQueryExecution", "athena:GetWorkGroup",
    ]
    resources = [aws_athena_workgroup.lake.arn]
  }

  statement {
    sid = "BrowseTheCatalog"
    actions = [
      "athena:GetDataCatalog", "athena:ListDatabases", "athena:GetDatabase",
      "athena:ListTableMetadata", "athena:GetTableMetadata",
    ]
    resources = ["arn:${local.partition}:athena:${local.region}:${local.account_id}:datacatalog/AwsDataCatalog"]
  }

  # The console lists workgroups, catalogs and engine versions before any query; these take
  # no resource-level permission.
  statement {
    sid       = "OpenTheConsole"
    actions   = ["athena:ListWorkGroups", "athena:ListDataCatalogs", "athena:ListEngineVersions"]
    resources = ["*"]
  }

  statement {
    sid = "ReadTheGlueTables"
    actions = [
      "glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables",
      "glue:GetPartition", "glue:GetPartitions", "glue:BatchGetPartition",
    ]
    resources = concat(
      [
        "arn:${local.partition}:glue:${local.region}:${local.account_id}:catalog",
        aws_glue_catalog_database.lake.arn,
        "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${local.lake_database}/*",
      ],
      # The datasets' sources' databases (datasets.tf).
      [for db in aws_glue_catalog_database.dataset_source : db.arn],
      [for db in aws_glue_catalog_database.dataset_source : "arn:${local.partition}:glue:${local.region}:${local.account_id}:table/${db.name}/*"],
    )
  }

  # Athena asks for the catalog's default database (and may try to create it) in every query's
  # region, and SHOW DATABASES lists every database: both are refused otherwise.
  statement {
    sid       = "AthenasDefaultDatabase"
    actions   = ["glue:GetDatabase", "glue:CreateDatabase"]
    resources = ["arn:${local.partition}:glue:${local.region}:${local.account_id}:database/default"]
  }

  statement {
    sid       = "ShowDatabases"
    actions   = ["glue:GetDatabases"]
    resources = ["arn:${local.partition}:glue:${local.region}:${local.account_id}:database/*"]
  }

  statement {
    sid       = "ListTheDataFiles"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn.ingest, local.bucket_arn.processed]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = concat([for t in values(local.lake_tables) : "${t.prefix}/*"], [for n in local.dataset_names : "${n}/*"])
    }
  }

  # GetBucketLocation requests carry no s3:prefix: under the condition above it never applied.
  statement {
    sid       = "LocateTheBuckets"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.bucket_arn.ingest, local.bucket_arn.processed]
  }

  statement {
    sid       = "ReadTheDataFiles"
    actions   = ["s3:GetObject"]
    resources = concat(local.raw_objects, local.star_objects, local.dataset_processed)
  }

  statement {
    sid = "WriteQueryResults"
    actions = [
      "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
      "s3:ListBucket", "s3:GetBucketLocation",
    ]
    resources = [aws_s3_bucket.athena_results.arn, "${aws_s3_bucket.athena_results.arn}/*"]
  }

  # Both zones and the results are encrypted with the pipeline's key, used through S3 only.
  statement {
    sid       = "UsePipelineKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.pipeline.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

# A day's scanned bytes in the workgroup. Athena reports ProcessedBytes by QueryState,
# QueryType and WorkGroup together (its CloudWatch metrics documentation), so an alarm on
# {WorkGroup} alone matches no series: the sum over the data-reading (DML) queries' states,
# cancelled ones included (those that hit the per-query cutoff), each missing day read as 0.
resource "aws_cloudwatch_metric_alarm" "athena_bytes_scanned" {
  count               = var.athena_daily_bytes_scanned_alarm == null ? 0 : 1
  alarm_name          = "${var.project}-athena-daily-bytes-scanned"
  alarm_description   = "Queries in the ${aws_athena_workgroup.lake.name} workgroup scanned more than ${var.athena_daily_bytes_scanned_alarm} bytes in a day."
  evaluation_periods  = 1
  threshold           = var.athena_daily_bytes_scanned_alarm
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]

  dynamic "metric_query" {
    for_each = local.athena_query_states
    content {
      id          = lower(metric_query.value)
      return_data = false
      metric {
        namespace   = "AWS/Athena"
        metric_name = "ProcessedBytes"
        dimensions  = { QueryState = metric_query.value, QueryType = "DML", WorkGroup = aws_athena_workgroup.lake.name }
        stat        = "Sum"
        period      = 86400
      }
    }
  }

  metric_query {
    id          = "scanned"
    label       = "bytes scanned in a day"
    expression  = join(" + ", [for state in local.athena_query_states : "FILL(${lower(state)}, 0)"])
    return_data = true
  }
}
