output "ingest_bucket" {
  description = "Raw Parquet, one file per table and run, and the ingest watermarks (_state/ingest/)."
  value       = aws_s3_bucket.data["ingest"].id
}

output "processed_bucket" {
  description = "The star schema as Parquet, quarantined fact rows (quarantine/) and transform's dimension snapshots (_state/transform/)."
  value       = aws_s3_bucket.data["processed"].id
}

output "state_machine_arn" {
  description = "The pipeline's state machine (null in s3 mode)."
  value       = one(aws_sfn_state_machine.pipeline[*].arn)
}

output "alarm_topic_arn" {
  description = "Alarms, failure messages and every execution's status."
  value       = aws_sns_topic.alarms.arn
}

output "function_names" {
  description = "The Lambdas, by stage."
  value       = { for k, f in aws_lambda_function.pipeline : k => f.function_name }
}

output "secret_arns" {
  description = "The database credential secrets."
  value       = { for k, s in aws_secretsmanager_secret.db : k => s.arn }
}

output "dead_letter_queue_url" {
  description = "Failed asynchronous invocations (s3 mode)."
  value       = aws_sqs_queue.dead_letter.id
}

output "lock_table" {
  description = "The item that keeps two executions from running at once."
  value       = aws_dynamodb_table.lock.name
}

output "lake_database" {
  description = "The Glue database of the lake's tables: raw_<source table> and the warehouse tables, over the two buckets."
  value       = aws_glue_catalog_database.lake.name
}

output "lake_dataset_tables" {
  description = "Each declared dataset's Glue table, as database.table: its source's database (<lake_database>_<source.name>), or lake_database for a dataset naming no source."
  value       = { for n in local.dataset_names : n => "${local.dataset_databases[n]}.${n}" }
}

output "athena_workgroup" {
  description = "The Athena workgroup to query the lake in (its results bucket, encryption and scan limit are enforced)."
  value       = aws_athena_workgroup.lake.name
}

output "athena_results_bucket" {
  description = "Athena's query results, expired after athena_results_days."
  value       = aws_s3_bucket.athena_results.id
}

output "analyst_policy_arn" {
  description = "A read-only policy for analysts: query the lake in the workgroup. Attach it to their role or group."
  value       = aws_iam_policy.analyst.arn
}

output "operator_policy_arn" {
  description = "What the etl command needs (read the buckets and database secrets, write the state objects): attach it to the operators' role."
  value       = aws_iam_policy.operator.arn
}

output "dataset_backfill_state_machine_arn" {
  description = "The datasets' first-load state machine (a Distributed Map over a landing prefix): start it with {\"prefix\": \"<a dataset's source.prefix>\"}. Null when no dataset with landing files is declared."
  value       = one(aws_sfn_state_machine.dataset_backfill[*].arn)
}

output "dataset_api_state_machine_arn" {
  description = "The API datasets' windows (dataset_api.tf): each API dataset's schedule starts it with {\"api\": {\"dataset\": name}, \"concurrency\": n}; start it so to run a window now (the first load, if the dataset has never been read). Null when no API dataset is declared."
  value       = one(aws_sfn_state_machine.dataset_api[*].arn)
}

output "dataset_api_token_secrets" {
  description = "The Secrets Manager secrets the API datasets' app tokens are read from, by name: put each token in its secret (its string, or JSON with \"token\")."
  value       = { for name, s in aws_secretsmanager_secret.api_token : name => s.arn }
}
