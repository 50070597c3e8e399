terraform {
  # 1.9: variable validations that refer to other variables.
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # The releases whose schema make check validates against (6.69.x, see docs/src/orchestration.md,
      # "Checked without AWS"); widen it only together with that check.
      version = "~> 6.69.0"
    }
  }

  # The state holds the database credentials: it lives in an encrypted S3 bucket, configured at
  # init (make plan/deploy with TF_BACKEND_CONFIG, or deploy.yml), never in a local file unless
  # asked for (TF_LOCAL_STATE=1).
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      project    = var.project
      managed-by = "terraform"
    }
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  # Step Functions runs the pipeline; in "s3" mode the schedule invokes ingest and S3 events
  # invoke transform and load.
  use_step_functions = var.trigger_mode == "step_functions"
  use_s3_triggers    = var.trigger_mode == "s3"
}
