variable "project" {
  description = "Prefix of every resource name."
  type        = string
  default     = "totesys"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.project))
    error_message = "project must be 2-21 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "aws_region" {
  description = "Region to deploy to."
  type        = string
  default     = "eu-west-2"
}

variable "bucket_suffix" {
  description = "Appended to the bucket names to make them globally unique (for example the account id). Empty: the account id."
  type        = string
  default     = ""

  validation {
    # S3 bucket names: lowercase letters, digits and dashes, at most 63 characters (the
    # longest name here is <project>-athena-results-<suffix>).
    condition     = can(regex("^([a-z0-9][a-z0-9-]*[a-z0-9])?$", var.bucket_suffix)) && length("${var.project}-athena-results-${var.bucket_suffix}") <= 63
    error_message = "bucket_suffix must be lowercase letters, digits and dashes (not at either end), short enough for <project>-athena-results-<suffix> to fit S3's 63 characters."
  }
}

variable "lambda_architecture" {
  description = "Instruction set of the Lambdas; must match the build (make build ARCH=arm64 for arm64)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.lambda_architecture)
    error_message = "lambda_architecture must be x86_64 or arm64."
  }
}

variable "lambda_zip_dir" {
  description = "Where cargo lambda build put the zips (<dir>/<function>/bootstrap.zip): an absolute path, or one relative to this folder."
  type        = string
  default     = "../target/lambda"
}

variable "lambda_settings" {
  description = "Memory (MB), timeout (s), ephemeral storage (/tmp, MB) and reserved concurrency per function. Ingest copies a landed Parquet file or workbook to /tmp to read it, so its storage bounds the largest such file (2048 MB by default; Lambda allows 512 to 10240). Reserved concurrency is null (none) by default: a new account's quota is often 10 and Lambda keeps 100 unreserved, so reserving any fails there, and the state machine's lock already runs one pipeline at a time. In s3 mode ingest and transform are always reserved at 1 (see docs/src/orchestration.md, S3-trigger mode)."
  type = object({
    ingest    = object({ memory = number, timeout = number, concurrency = optional(number), ephemeral_storage = optional(number, 2048) })
    transform = object({ memory = number, timeout = number, concurrency = optional(number), ephemeral_storage = optional(number, 512) })
    load      = object({ memory = number, timeout = number, concurrency = optional(number), ephemeral_storage = optional(number, 512) })
  })
  default = {
    ingest    = { memory = 256, timeout = 300 }
    transform = { memory = 512, timeout = 600 }
    load      = { memory = 256, timeout = 900 }
  }

  validation {
    condition = alltrue([
      for f in values(var.lambda_settings) : f.memory >= 128 && f.memory <= 10240 && floor(f.memory) == f.memory && f.timeout >= 1 && f.timeout <= 900 && floor(f.timeout) == f.timeout
    ])
    error_message = "lambda_settings: memory is a whole number of MB from 128 to 10240, timeout a whole number of seconds from 1 to 900 (Lambda's limits)."
  }

  validation {
    condition = alltrue([
      for f in values(var.lambda_settings) : f.ephemeral_storage >= 512 && f.ephemeral_storage <= 10240 && floor(f.ephemeral_storage) == f.ephemeral_storage
    ])
    error_message = "lambda_settings: ephemeral_storage is a whole number of MB from 512 to 10240 (Lambda's limits)."
  }

  validation {
    condition = alltrue([
      for f in values(var.lambda_settings) : f.concurrency == null ? true : f.concurrency >= 1 && floor(f.concurrency) == f.concurrency
    ])
    error_message = "lambda_settings: a reserved concurrency is null (none) or a whole number of at least 1 (0 would stop the function)."
  }

  validation {
    condition = var.trigger_mode != "s3" || alltrue([
      for name in ["ingest", "transform"] : coalesce(var.lambda_settings[name].concurrency, 1) == 1
    ])
    error_message = "lambda_settings: in s3 mode ingest and transform run one at a time (reserved concurrency 1, set by the configuration): leave their concurrency null or 1."
  }
}

variable "log_retention_days" {
  description = "Retention of the Lambda and Step Functions log groups."
  type        = number
  default     = 365
}

variable "trigger_mode" {
  description = "step_functions: the schedule starts the state machine (ingest -> transform -> load). s3: the schedule invokes ingest, and ObjectCreated events invoke transform (ingest bucket) and load (processed bucket)."
  type        = string
  default     = "step_functions"

  validation {
    condition     = contains(["step_functions", "s3"], var.trigger_mode)
    error_message = "trigger_mode must be step_functions or s3."
  }
}

variable "schedule_expression" {
  description = "How often the pipeline runs (an EventBridge rate or cron expression)."
  type        = string
  default     = "rate(20 minutes)"
}

variable "dataset_sweep_expression" {
  description = "How often every declared dataset's landing prefix is swept for files whose notification was lost (an EventBridge rate or cron expression)."
  type        = string
  default     = "rate(1 hour)"
}

variable "dataset_backfill" {
  description = "The datasets' first-load state machine (dataset_backfill.tf): how many files one ingest invocation is given (a batch), and how many batches are ingested at once (1 in s3 mode, where ingest runs one invocation at a time)."
  type = object({
    batch_files = optional(number, 100)
    concurrency = optional(number, 10)
  })
  default = {}

  validation {
    condition = (
      var.dataset_backfill.batch_files >= 1 && floor(var.dataset_backfill.batch_files) == var.dataset_backfill.batch_files &&
      var.dataset_backfill.concurrency >= 1 && floor(var.dataset_backfill.concurrency) == var.dataset_backfill.concurrency
    )
    error_message = "dataset_backfill: batch_files and concurrency are whole numbers of at least 1 (Step Functions reads a concurrency of 0 as no limit at all)."
  }
}

variable "api_base_url" {
  description = "Replaces the declared base_url of every dataset paged from an API (a staging portal); empty: each as declared."
  type        = string
  default     = ""
  validation {
    condition     = var.api_base_url == "" || can(regex("^https?://", var.api_base_url))
    error_message = "api_base_url: an http(s) URL, or empty."
  }
}

variable "schedule_enabled" {
  description = "Whether the schedule is on. Turn it off for the first backfill, then on."
  type        = bool
  default     = true
}

variable "tables" {
  description = "The source tables the pipeline ingests (one Map iteration each); a fact table needs every dimension table."
  type        = list(string)
  default = [
    "address", "counterparty", "currency", "department", "design", "payment", "payment_type",
    "purchase_order", "sales_order", "staff", "transaction",
  ]

  validation {
    condition = alltrue([for t in var.tables : contains([
      "address", "counterparty", "currency", "department", "design", "payment", "payment_type",
      "purchase_order", "sales_order", "staff", "transaction",
    ], t)])
    error_message = "tables may list only ToteSys source tables (utils::tables::TABLES)."
  }

  validation {
    # Fact rows reference every dimension table: the hold and the warehouse's keys need them.
    condition = length(setintersection(var.tables, ["payment", "purchase_order", "sales_order"])) == 0 || length(setsubtract([
      "address", "counterparty", "currency", "department", "design", "payment_type", "staff", "transaction",
    ], var.tables)) == 0
    error_message = "tables lists a fact table (payment, purchase_order, sales_order) without every dimension table."
  }
}

variable "map_concurrency" {
  description = "How many tables are ingested at once (source database connections at once)."
  type        = number
  default     = 4

  validation {
    condition     = var.map_concurrency >= 1 && floor(var.map_concurrency) == var.map_concurrency
    error_message = "map_concurrency must be a whole number of at least 1 (Step Functions reads 0 as no limit at all)."
  }
}

variable "transient_retry" {
  description = "Retry of transient errors (lost connections, throttling, S3 5xx) in the state machine."
  type = object({
    interval_seconds = number
    max_attempts     = number
    backoff_rate     = number
  })
  default = { interval_seconds = 5, max_attempts = 4, backoff_rate = 2 }

  validation {
    # A Retrier as the States Language takes it: CreateStateMachine refuses anything else.
    condition     = var.transient_retry.interval_seconds >= 1 && floor(var.transient_retry.interval_seconds) == var.transient_retry.interval_seconds && var.transient_retry.max_attempts >= 0 && floor(var.transient_retry.max_attempts) == var.transient_retry.max_attempts && var.transient_retry.backoff_rate >= 1
    error_message = "transient_retry: interval_seconds is a whole number of at least 1, max_attempts a whole number of at least 0, backoff_rate at least 1."
  }
}

variable "missing_dimension_retry" {
  description = "Retry of a load whose fact rows reference dimension rows not loaded yet."
  type = object({
    interval_seconds = number
    max_attempts     = number
    backoff_rate     = number
  })
  default = { interval_seconds = 30, max_attempts = 3, backoff_rate = 2 }

  validation {
    # A Retrier as the States Language takes it: CreateStateMachine refuses anything else.
    condition     = var.missing_dimension_retry.interval_seconds >= 1 && floor(var.missing_dimension_retry.interval_seconds) == var.missing_dimension_retry.interval_seconds && var.missing_dimension_retry.max_attempts >= 0 && floor(var.missing_dimension_retry.max_attempts) == var.missing_dimension_retry.max_attempts && var.missing_dimension_retry.backoff_rate >= 1
    error_message = "missing_dimension_retry: interval_seconds is a whole number of at least 1, max_attempts a whole number of at least 0, backoff_rate at least 1."
  }
}

variable "ingest_safety_lag_seconds" {
  description = "Seconds the ingest window stays behind now (INGEST_SAFETY_LAG_SECONDS), so rows committed late are not skipped."
  type        = number
  default     = 5
}

variable "ingest_max_rows_per_file" {
  description = "Rows a raw file holds at most (INGEST_MAX_ROWS_PER_FILE): a larger window is read as consecutive sub-windows, a file and a watermark move each, so a backfill makes progress a file at a time. Rows sharing one last_updated value stay in one file, which may then hold more."
  type        = number
  default     = 1000000

  validation {
    condition     = var.ingest_max_rows_per_file >= 1 && floor(var.ingest_max_rows_per_file) == var.ingest_max_rows_per_file
    error_message = "ingest_max_rows_per_file is a whole number of rows, at least 1."
  }
}

variable "load_bulk_min_rows" {
  description = "Files of at least this many rows take the load's bulk path (LOAD_BULK_MIN_ROWS): copied straight into their table, the foreign keys checked set-based (one statement per key over the file's distinct values, the referenced rows locked FOR KEY SHARE as row-by-row checks would) where the load's role may set session_replication_role (superuser, or GRANT SET ON PARAMETER session_replication_role on PostgreSQL 15+); no schema change and no lock a reader waits for. 0 turns the bulk path off (every file staged and checked row by row)."
  type        = number
  default     = 10000

  validation {
    condition     = var.load_bulk_min_rows >= 0 && floor(var.load_bulk_min_rows) == var.load_bulk_min_rows
    error_message = "load_bulk_min_rows is a whole number of rows, 0 to turn the bulk path off."
  }
}

variable "load_lock_timeout_ms" {
  description = "The longest any statement of the load waits for a lock (LOAD_LOCK_TIMEOUT_MS): a DBA's ALTER TABLE, a plain REFRESH of a view, another transaction changing a referenced key. A file that waits longer rolls back and is retried (TransientDatabaseError, the LockTimeouts metric); a view refresh that does is reported and done by the next load."
  type        = number
  default     = 10000

  validation {
    condition     = var.load_lock_timeout_ms >= 1 && floor(var.load_lock_timeout_ms) == var.load_lock_timeout_ms
    error_message = "load_lock_timeout_ms is a whole number of milliseconds, at least 1."
  }
}

variable "deadline_margin_seconds" {
  description = "Each Lambda starts no new file (ingest, load) or batch (transform) with less time than this left before its timeout (DEADLINE_MARGIN_SECONDS); it returns complete = false and the state machine invokes it again. More than one file takes at the slowest stage; less than every timeout in lambda_settings."
  type        = number
  default     = 60

  validation {
    condition     = var.deadline_margin_seconds >= 0 && alltrue([for f in values(var.lambda_settings) : var.deadline_margin_seconds < f.timeout])
    error_message = "deadline_margin_seconds is at least 0 and less than every function's timeout in lambda_settings (a margin past the timeout leaves one file per invocation)."
  }
}

variable "execution_timeout_seconds" {
  description = "How long an execution may run. null: three times one pass's Lambda timeouts (2 h with the defaults). A backfill loops through many passes: an execution near Step Functions' 25,000-event history limit (some 150 ingest rounds) hands over to a fresh one, which gets this timeout again; set it to cover what make bench's rates give for that many rounds of the source's size."
  type        = number
  default     = null

  validation {
    condition     = var.execution_timeout_seconds == null ? true : var.execution_timeout_seconds >= 60 && var.execution_timeout_seconds <= 31536000
    error_message = "execution_timeout_seconds is null or from 60 to 31536000 (a year)."
  }
}

variable "db_ssl_root_cert" {
  description = "Path inside the zip of a PEM bundle that verifies the databases' certificates (DB_SSL_ROOT_CERT), e.g. /var/task/global-bundle.pem for RDS (make build LAMBDA_INCLUDE=global-bundle.pem). Empty: the connection is encrypted but the certificate chain is not verified, as libpq's sslmode=require."
  type        = string
  default     = ""
}

variable "source_db" {
  description = "ToteSys credentials, stored in Secrets Manager. Supply through TF_VAR_source_db or an untracked .tfvars file."
  type = object({
    host     = string
    port     = number
    user     = string
    password = string
    database = string
    sslmode  = optional(string, "require")
  })
  sensitive = true

  validation {
    # What utils::db reads: libpq's other modes (verify-ca, verify-full) would fail every
    # connection with a Configuration error; set db_ssl_root_cert to verify the server.
    condition     = contains(["disable", "prefer", "require"], var.source_db.sslmode)
    error_message = "source_db.sslmode must be disable, prefer or require (to verify the server's certificate, set db_ssl_root_cert)."
  }
}

variable "warehouse_db" {
  description = "Warehouse credentials, stored in Secrets Manager. Supply through TF_VAR_warehouse_db or an untracked .tfvars file."
  type = object({
    host     = string
    port     = number
    user     = string
    password = string
    database = string
    sslmode  = optional(string, "require")
  })
  sensitive = true

  validation {
    # What utils::db reads: libpq's other modes (verify-ca, verify-full) would fail every
    # connection with a Configuration error; set db_ssl_root_cert to verify the server.
    condition     = contains(["disable", "prefer", "require"], var.warehouse_db.sslmode)
    error_message = "warehouse_db.sslmode must be disable, prefer or require (to verify the server's certificate, set db_ssl_root_cert)."
  }
}

variable "alarm_email" {
  description = "Address subscribed to the alarm topic (confirm the email AWS sends). Empty: no subscription."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "alarm_email must be one email address (name@example.com) or empty."
  }
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted object version is kept in the buckets before it expires."
  type        = number
  default     = 30
}

variable "vpc_subnet_ids" {
  description = "Subnets to attach the Lambdas to when the databases are private. The subnets need a route to S3 (a gateway endpoint), Secrets Manager (an interface endpoint or NAT) and both databases. Empty: no VPC."
  type        = list(string)
  default     = []

  validation {
    condition     = (length(var.vpc_subnet_ids) == 0) == (length(var.vpc_security_group_ids) == 0)
    error_message = "vpc_subnet_ids and vpc_security_group_ids go together: give both (a VPC attachment) or neither."
  }
}

variable "vpc_security_group_ids" {
  description = "Security groups of the Lambdas when vpc_subnet_ids is set."
  type        = list(string)
  default     = []
}

variable "quarantined_rows_threshold" {
  description = "Quarantined fact rows in an hour above which the alarm fires (0: any)."
  type        = number
  default     = 0
}

variable "secret_recovery_window_days" {
  description = "Days a deleted database secret can still be restored (0: deleted at once). While a deleted secret waits out this window its name cannot be reused, so a destroy followed by an apply within it fails: use 0 for environments you tear down and rebuild."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or from 7 to 30 (what Secrets Manager accepts)."
  }
}

variable "lake_first_day" {
  description = "The first day (yyyy/MM/dd, UTC) the buckets hold files for: the day of the first ingest. Athena's partition projection enumerates the days from here to today for a query that does not filter on dt."
  type        = string
  default     = "2024/01/01"

  validation {
    condition     = can(regex("^[0-9]{4}/(0[1-9]|1[0-2])/(0[1-9]|[12][0-9]|3[01])$", var.lake_first_day))
    error_message = "lake_first_day is a day written yyyy/MM/dd, e.g. 2024/11/14."
  }
}

variable "athena_bytes_scanned_cutoff_per_query" {
  description = "Bytes a query in the Athena workgroup may scan before Athena cancels it (at least 10 MB, Athena's minimum)."
  type        = number
  default     = 10737418240 # 10 GiB

  validation {
    condition     = var.athena_bytes_scanned_cutoff_per_query >= 10485760 && floor(var.athena_bytes_scanned_cutoff_per_query) == var.athena_bytes_scanned_cutoff_per_query
    error_message = "athena_bytes_scanned_cutoff_per_query is a whole number of bytes, at least 10485760 (10 MB)."
  }
}

variable "athena_daily_bytes_scanned_alarm" {
  description = "Bytes the workgroup's queries may scan in a day before an alarm goes to the topic; null: no alarm."
  type        = number
  default     = 107374182400 # 100 GiB

  validation {
    condition     = var.athena_daily_bytes_scanned_alarm == null ? true : var.athena_daily_bytes_scanned_alarm > 0
    error_message = "athena_daily_bytes_scanned_alarm is a positive number of bytes, or null for no alarm."
  }
}

variable "athena_results_days" {
  description = "Days Athena's query results are kept in their bucket."
  type        = number
  default     = 7

  validation {
    condition     = var.athena_results_days >= 1 && floor(var.athena_results_days) == var.athena_results_days
    error_message = "athena_results_days is a whole number of days, at least 1."
  }
}

variable "freshness_alarm_multiple" {
  description = "A source table counts as behind, and its freshness alarm fires, when its watermark is older than this many schedule periods (a rate() schedule_expression), or when no ingest has reported it for that long while the schedule is on."
  type        = number
  default     = 3

  validation {
    condition     = var.freshness_alarm_multiple >= 1
    error_message = "freshness_alarm_multiple is at least 1 (one schedule period)."
  }

  validation {
    condition = var.freshness_alarm_seconds != null || try(
      tonumber(regex("^rate\\((\\d+) (minutes?|hours?|days?)\\)$", var.schedule_expression)[0]) * lookup(
        { minute = 60, minutes = 60, hour = 3600, hours = 3600, day = 86400, days = 86400 },
        regex("^rate\\((\\d+) (minutes?|hours?|days?)\\)$", var.schedule_expression)[1],
      ) * var.freshness_alarm_multiple <= 604800,
      true,
    )
    error_message = "freshness_alarm_multiple schedule periods come to more than 7 days, the longest window CloudWatch evaluates: lower it, or set freshness_alarm_seconds."
  }
}

variable "freshness_alarm_seconds" {
  description = "The freshness alarm's threshold in seconds, instead of freshness_alarm_multiple schedule periods; required when schedule_expression is a cron expression. null: the multiple."
  type        = number
  default     = null

  validation {
    condition     = var.freshness_alarm_seconds == null ? can(regex("^rate\\(\\d+ (minutes?|hours?|days?)\\)$", var.schedule_expression)) : var.freshness_alarm_seconds >= 60 && var.freshness_alarm_seconds <= 604800
    error_message = "freshness_alarm_seconds is from 60 to 604800 (7 days, the longest window CloudWatch evaluates), and must be set when schedule_expression is not a rate() expression (a cron schedule has no single period to multiply)."
  }
}
