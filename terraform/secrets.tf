# The credentials are Terraform variables marked sensitive (never in a committed file); they do
# reach the state file, so keep the state in an encrypted, access-controlled backend.
# The Lambdas read the secret on their first connection and again whenever the database refuses
# the cached login, so a rotated password takes effect on the next run.
locals {
  databases = {
    source    = var.source_db
    warehouse = var.warehouse_db
  }
}

resource "aws_secretsmanager_secret" "db" {
  # checkov:skip=CKV2_AWS_57:Both databases are owned by other teams (ToteSys and the warehouse); their owners rotate the passwords and update this secret. Rotation here would need a rotation Lambda with rights over their users.
  # Literal keys: for_each may not be derived from the sensitive credentials.
  for_each                = toset(["source", "warehouse"])
  name                    = "${var.project}/${each.key}-db"
  description             = "${each.key} database credentials for the ${var.project} pipeline"
  kms_key_id              = aws_kms_key.pipeline.arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "db" {
  for_each      = aws_secretsmanager_secret.db
  secret_id     = each.value.id
  secret_string = jsonencode(local.databases[each.key])
}
