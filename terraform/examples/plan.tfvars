# A complete, realistic set of variables: what make check plans with (tf-offline --plan, where
# the machine has a provider mirror) and a starting point for your own terraform.tfvars.
# The credentials are placeholders: supply real ones through TF_VAR_source_db and
# TF_VAR_warehouse_db, never in a committed file.

project       = "totesys"
aws_region    = "eu-west-2"
bucket_suffix = "" # empty: the account id
alarm_email   = "data-team@example.com"

# trigger_mode: step_functions (the default) or s3. Not set here: make check plans both modes,
# through TF_VAR_trigger_mode, which a value in this file would override.
schedule_expression = "rate(20 minutes)"
schedule_enabled    = false # the first backfill runs by hand; then true
map_concurrency     = 4

lambda_architecture = "arm64"
lambda_settings = {
  ingest    = { memory = 256, timeout = 300 }
  transform = { memory = 512, timeout = 600 }
  # No reserved concurrency by default (see docs/src/deploying.md).
  load = { memory = 256, timeout = 900 }
}
# A backfill: files of at most 1M rows, a Lambda stops starting work with 60 s left and the
# state machine invokes it again, large files load by the bulk path (see docs/src/operations.md, Backfills).
ingest_max_rows_per_file    = 1000000
deadline_margin_seconds     = 60
load_bulk_min_rows          = 10000
secret_recovery_window_days = 7
db_ssl_root_cert            = "/var/task/global-bundle.pem"

lake_first_day                        = "2024/11/14"
athena_bytes_scanned_cutoff_per_query = 1073741824
athena_daily_bytes_scanned_alarm      = 21474836480
athena_results_days                   = 14
freshness_alarm_multiple              = 3

vpc_subnet_ids         = ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a69788"]
vpc_security_group_ids = ["sg-0123456789abcdef0"]

source_db = {
  host     = "totesys.cluster-ro-abcdefghijkl.eu-west-2.rds.amazonaws.com"
  port     = 5432
  user     = "totesys_reader"
  password = "placeholder-not-a-secret"
  database = "totesys"
}
warehouse_db = {
  host     = "warehouse.abcdefghijkl.eu-west-2.rds.amazonaws.com"
  port     = 5432
  user     = "totesys_loader"
  password = "placeholder-not-a-secret"
  database = "warehouse"
  sslmode  = "require" # with db_ssl_root_cert above, the certificate is verified too
}
