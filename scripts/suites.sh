#!/usr/bin/env bash
# The suites of make test (scripts/test.sh), run under scripts/env.sh: the Rust suites and the
# Python suites (tests/state_machine, tests/deployment, tests/soda) side by side, since both spend much of
# their time waiting on PostgreSQL, moto or Step Functions' wait states.
# The Rust suites of the tests crate run in two groups side by side (below).
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

# The two longest Rust suites run beside the others: each suite's tests wait on PostgreSQL and
# moto much of the time, and a suite waits for its slowest test, so one after another leaves
# the cores idle (about half of them, measured).
long=(load chaos)
rest=()
for f in tests/tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ " ${long[*]} " == *" $name "* ]] || rest+=(--test "$name")
done
long_log="$root/.build/long-suites.log"
cargo test -p totesys-tests "${long[@]/#/--test=}" >"$long_log" 2>&1 &
long_suites=$!
trap 'kill "$python_suites" "$long_suites" 2>/dev/null || true' INT TERM

status=0
cargo test --workspace --exclude totesys-tests || status=1
cargo test -p totesys-tests --lib "${rest[@]}" || status=1
wait "$long_suites" || status=1
cat "$long_log"
wait "$python_suites" || status=1
cat "$log"
exit "$status"
