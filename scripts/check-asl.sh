#!/usr/bin/env bash
# Validates the state machine definitions as Terraform renders them (scripts/asl_render.py, with
# realistic ARNs) against the Amazon States Language, with asl-validator pinned in
# tools/asl/package-lock.json: states, fields, paths, intrinsic functions, Resource ARNs.
# Rendered for two partitions (aws, aws-us-gov). The definition is the same in both trigger
# modes (s3 mode deploys no state machine).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/tools/asl"
if ! command -v npm >/dev/null; then
  echo "[check] npm is missing; installing Debian's nodejs and npm" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
stamp="$tools/node_modules/.lock-$(sha256sum "$tools/package-lock.json" | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  (cd "$tools" && npm ci --no-audit --no-fund --silent)
  touch "$stamp"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for partition in aws aws-us-gov; do
  python3 "$root/scripts/asl_render.py" "$partition" "$out/$partition.json"
  echo "[check] asl-validator $("$tools/node_modules/.bin/asl-validator" --version): state machine, partition $partition"
  "$tools/node_modules/.bin/asl-validator" --json-path "$out/$partition.json"
  python3 "$root/scripts/asl_render.py" "$partition" "$out/backfill-$partition.json" backfill
  echo "[check] asl-validator: the datasets' first-load state machine, partition $partition"
  "$tools/node_modules/.bin/asl-validator" --json-path "$out/backfill-$partition.json"
  python3 "$root/scripts/asl_render.py" "$partition" "$out/api-$partition.json" api
  echo "[check] asl-validator: the API datasets' windows, partition $partition"
  "$tools/node_modules/.bin/asl-validator" --json-path "$out/api-$partition.json"
done
