# Declared datasets: datasets/*.json, the files the Lambdas are built with (crates/datasets
# bundles them), read here with jsondecode, so the landing notifications, the sweep, the roles
# and the Glue tables follow the same declarations. docs/src/datasets.md describes them.
#
# Files land in the landing bucket under each dataset's source.prefix. Each ObjectCreated
# invokes ingest (asynchronously) with the notification; the sweep, on its own schedule, invokes
# ingest with {"datasets": [...]}, which ingests every landed file without a record, so a lost
# notification costs a delay, never a file. Ingest writes the typed rows under <dataset>/ in the
# ingest bucket and queues them under _state/datasets/pending/; transform (every execution of
# the state machine, or on the marker's notification in s3 mode) publishes them under
# <dataset>/ in the processed bucket, where the Glue table below reads them, and queues them for
# the load, which writes the declared warehouse table.
locals {
  dataset_dir = "${path.module}/../datasets"
  datasets = {
    for f in fileset(local.dataset_dir, "*.json") :
    jsondecode(file("${local.dataset_dir}/${f}")).name => jsondecode(file("${local.dataset_dir}/${f}"))
  }
  dataset_names = sort(keys(local.datasets))
  # The count of each resource that exists once when any dataset is declared.
  any_dataset = length(local.dataset_names) > 0 ? 1 : 0
  # Datasets whose files land (source.prefix), and those paged from an HTTP API (source.api,
  # dataset_api.tf): only the first have landing notifications, the sweep and the first-load
  # Distributed Map.
  file_datasets      = { for n, d in local.datasets : n => d if try(d.source.api, null) == null }
  file_dataset_names = sort(keys(local.file_datasets))
  any_file_dataset   = length(local.file_dataset_names) > 0 ? 1 : 0

  # The sources datasets name (source.name): a Glue database each, <lake database>_<source>,
  # holding their datasets' tables, so the lake reads <source>/<dataset>; a dataset without one
  # has its table in the lake's database.
  dataset_sources = toset(compact([for d in values(local.datasets) : try(d.source.name, "")]))
  dataset_databases = {
    for n, d in local.datasets : n => (
      try(d.source.name, null) == null
      ? aws_glue_catalog_database.lake.name
      : aws_glue_catalog_database.dataset_source[d.source.name].name
    )
  }

  # The master keys encrypted fields are declared under: ingest may decrypt with these only
  # (iam.tf), named by ARN or by alias.
  dataset_kms_keys    = distinct([for d in values(local.datasets) : d.source.encryption.kms_key if try(d.source.encryption.kms_key, null) != null])
  dataset_kms_arns    = [for k in local.dataset_kms_keys : k if startswith(k, "arn:")]
  dataset_kms_aliases = [for k in local.dataset_kms_keys : k if startswith(k, "alias/")]

  # A declared type as Glue (Hive) types it: as the Parquet files ingest writes are read.
  # Hive has no time type: a time is a bigint of microseconds since midnight, as for the
  # database's tables; a point is the struct ingest writes.
  hive_types = {
    smallint    = "smallint"
    integer     = "int"
    bigint      = "bigint"
    text        = "string"
    boolean     = "boolean"
    date        = "date"
    timestamp   = "timestamp"
    timestamptz = "timestamp"
    time        = "bigint"
    point       = "struct<lon:double,lat:double>"
  }
  dataset_columns = {
    for name, d in local.datasets : name => [
      for c in d.columns : {
        name = c.name
        type = startswith(c.type, "decimal(") ? c.type : local.hive_types[c.type]
        comment = join(" ", compact([
          try(c.description, ""),
          try(c.unit, null) == null ? "" : "(${c.unit})",
        ]))
      }
    ]
  }
}

resource "aws_s3_bucket_notification" "landing" {
  count  = local.any_file_dataset
  bucket = aws_s3_bucket.data["landing"].id

  dynamic "lambda_function" {
    for_each = local.file_datasets
    content {
      id                  = "ingest-${lambda_function.key}"
      lambda_function_arn = aws_lambda_function.pipeline["ingest"].arn
      events              = ["s3:ObjectCreated:*"]
      filter_prefix       = lambda_function.value.source.prefix
    }
  }

  depends_on = [aws_lambda_permission.landing_invokes_ingest]
}

resource "aws_lambda_permission" "landing_invokes_ingest" {
  statement_id   = "s3-landing-bucket"
  action         = "lambda:InvokeFunction"
  function_name  = aws_lambda_function.pipeline["ingest"].function_name
  principal      = "s3.amazonaws.com"
  source_arn     = aws_s3_bucket.data["landing"].arn
  source_account = local.account_id
}

# The sweep: every landed file without a record, whatever happened to its notification.
resource "aws_cloudwatch_event_rule" "dataset_sweep" {
  count               = local.any_file_dataset
  name                = "${var.project}-dataset-sweep"
  description         = "Ingests every landed file of ${join(", ", local.file_dataset_names)} that has no record"
  schedule_expression = var.dataset_sweep_expression
  state               = var.schedule_enabled ? "ENABLED" : "DISABLED"
}

resource "aws_cloudwatch_event_target" "dataset_sweep" {
  count = local.any_file_dataset
  rule  = aws_cloudwatch_event_rule.dataset_sweep[0].name
  arn   = aws_lambda_function.pipeline["ingest"].arn
  input = jsonencode({ datasets = local.file_dataset_names })
}

resource "aws_lambda_permission" "sweep_invokes_ingest" {
  count         = local.any_file_dataset
  statement_id  = "dataset-sweep"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.pipeline["ingest"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.dataset_sweep[0].arn
}

resource "aws_glue_catalog_database" "dataset_source" {
  for_each    = local.dataset_sources
  name        = "${local.lake_database}_${each.key}"
  description = "${var.project}: the datasets of the source ${each.key}, over the processed bucket."
}

# One table per dataset over the processed zone, as for the star schema's tables (lake.tf), in
# its source's database: the declared columns with their descriptions and units, the declared
# metadata as table parameters, partition projection over the key layout <dataset>/YYYY/MM/DD/
# (the day the file landed).
resource "aws_glue_catalog_table" "dataset" {
  for_each      = local.datasets
  name          = each.key
  database_name = local.dataset_databases[each.key]
  description   = each.value.description
  table_type    = "EXTERNAL_TABLE"

  parameters = merge(try(each.value.metadata, {}), {
    EXTERNAL                      = "TRUE"
    classification                = "parquet"
    "projection.enabled"          = "true"
    "projection.dt.type"          = "date"
    "projection.dt.format"        = "yyyy/MM/dd"
    "projection.dt.range"         = "${var.lake_first_day},NOW"
    "projection.dt.interval"      = "1"
    "projection.dt.interval.unit" = "DAYS"
    "storage.location.template"   = "s3://${aws_s3_bucket.data["processed"].id}/${each.key}/$${dt}/"
  })

  partition_keys {
    name    = "dt"
    type    = "string"
    comment = "The day the file landed, yyyy/MM/dd (UTC): filter on it to read less."
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.data["processed"].id}/${each.key}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
      parameters = {
        "serialization.format" = "1"
      }
    }

    dynamic "columns" {
      for_each = local.dataset_columns[each.key]
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }
}
