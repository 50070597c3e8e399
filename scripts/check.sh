#!/usr/bin/env bash
# make check: the documentation's links (scripts/check-docs.py), then cargo fmt --check and
# clippy -D warnings, with the deployment checks (scripts/check-terraform.sh, whose first run
# installs checkov) running beside them, as they share no inputs. Fails if any check fails; the
# Terraform checks' output follows the Rust ones. (make docs builds the book with mdBook as
# well: its install would add a minute to every cold make test.)
# --no-clippy: all but clippy (make test applies clippy's lints as it builds, scripts/test.sh).
set -uo pipefail

clippy=1
if [[ "${1:-}" == --no-clippy ]]; then clippy=""; fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/.build"
log="$root/.build/check-terraform.log"
"$root/scripts/check-terraform.sh" >"$log" 2>&1 &
terraform_checks=$!
trap 'kill "$terraform_checks" 2>/dev/null || true' INT TERM

status=0
python3 "$root/scripts/check-docs.py" "$root" || status=1
(cd "$root" && cargo fmt --all --check && cargo fmt --manifest-path fuzz/Cargo.toml --check &&
  if [[ -n "$clippy" ]]; then cargo clippy --workspace --all-targets -- -D warnings; fi) ||
  status=1
wait "$terraform_checks" || status=1
cat "$log"
exit "$status"
