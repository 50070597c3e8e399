#!/usr/bin/env bash
# The suites of make test (scripts/test.sh), run under scripts/env.sh: the Rust suites and the
# Python suites (tests/state_machine, tests/deployment, tests/soda) side by side, since both spend much of
# their time waiting on PostgreSQL, moto or Step Functions' wait states.
# The Python suites reset the moto they talk to, so they get a moto of their own (env.sh starts
# one when AWS_ENDPOINT_URL is unset); PostgreSQL is shared, each test in a database of its own.
# Fails if either fails; the Python suites' output follows the Rust ones'.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log="$root/.build/pytest.log"
env -u AWS_ENDPOINT_URL scripts/env.sh .venv/bin/python -m pytest -q tests/state_machine tests/deployment tests/soda \
  >"$log" 2>&1 &
python_suites=$!
trap 'kill "$python_suites" 2>/dev/null || true' INT TERM

status=0
cargo test --workspace || status=1
wait "$python_suites" || status=1
cat "$log"
exit "$status"
