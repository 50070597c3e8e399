# One customer-managed key encrypts what the pipeline stores: both buckets (with S3 Bucket Keys,
# so the many ranged GETs of Parquet footers and row groups do not each call KMS), the secrets,
# the Lambdas' environment, the log groups, the alarm topic and the dead-letter queue.
resource "aws_kms_key" "pipeline" {
  description             = "${var.project}: buckets, secrets, logs, alarm topic, dead-letter queue"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "pipeline" {
  name          = "alias/${var.project}"
  target_key_id = aws_kms_key.pipeline.key_id
}

data "aws_iam_policy_document" "kms" {
  # checkov:skip=CKV_AWS_109:A key policy's resource is always the key itself ("*" means this key); the account root keeps administration so IAM policies can delegate.
  # checkov:skip=CKV_AWS_111:As above: "*" in a key policy is this key only.
  # checkov:skip=CKV_AWS_356:As above: "*" in a key policy is this key only.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncryptsTheLogGroups"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }

  # CloudWatch alarms publish to the encrypted topic as themselves.
  statement {
    sid       = "AlarmsPublishToTheTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # EventBridge publishes the execution status to the topic and sends what it cannot deliver to
  # the dead-letter queue, both encrypted with this key. Unlike CloudWatch, it does not support
  # the aws:SourceAccount condition when publishing to an encrypted topic (SNS developer guide,
  # key management): under that condition every status message would be dropped.
  statement {
    sid       = "EventsPublishToTheTopicAndQueue"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}
