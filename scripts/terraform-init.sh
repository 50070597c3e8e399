#!/usr/bin/env bash
# terraform init for make plan/deploy/destroy, with the state where it is safe. The state holds
# the database credentials in plain text, so terraform/versions.tf declares backend "s3" {} and
# this refuses to go on until you say where it lives:
#   TF_BACKEND_CONFIG=FILE  the s3 backend's settings (see terraform/backend.hcl.example), or
#   TF_LOCAL_STATE=1        a local terraform/terraform.tfstate, on a machine you trust (a trial).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
override="$root/terraform/local_backend_override.tf"

if [[ -n "${TF_BACKEND_CONFIG:-}" ]]; then
  config=$(realpath -e "$TF_BACKEND_CONFIG" 2>/dev/null) || {
    echo "TF_BACKEND_CONFIG=$TF_BACKEND_CONFIG: no such file" >&2
    exit 1
  }
  rm -f "$override"
  terraform -chdir="$root/terraform" init -input=false -backend-config="$config"
elif [[ "${TF_LOCAL_STATE:-}" == 1 ]]; then
  echo "TF_LOCAL_STATE=1: the state, database passwords included, goes to terraform/terraform.tfstate in plain text" >&2
  printf '# Written by scripts/terraform-init.sh for TF_LOCAL_STATE=1 (ignored by git).\nterraform {\n  backend "local" {}\n}\n' >"$override"
  terraform -chdir="$root/terraform" init -input=false
else
  cat >&2 <<'MSG'
Where should the Terraform state live? It holds the database passwords in plain text.
  TF_BACKEND_CONFIG=terraform/backend.hcl make ...   an encrypted S3 bucket (copy terraform/backend.hcl.example)
  TF_LOCAL_STATE=1 make ...                          a local file, for a trial on a machine you trust
See docs/src/deploying.md.
MSG
  exit 1
fi
