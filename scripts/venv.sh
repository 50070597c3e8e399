#!/usr/bin/env bash
# Creates the project venv (.venv, or $VENV) and installs the given requirement files into it,
# once per change of their contents.
# Usage: [VENV=DIR] scripts/venv.sh REQUIREMENTS_FILE...
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="${VENV:-$root/.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    echo "[venv] python3-venv is missing; installing it" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
for req in "$@"; do
  stamp="$venv/.$(basename "$req").$(sha256sum "$req" | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    echo "[venv] installing $(basename "$req")" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    touch "$stamp"
  fi
done
