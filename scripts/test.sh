#!/usr/bin/env bash
# make test: the checks of make check, the build of every binary and test with clippy's lints
# applied as it compiles, then the suites (scripts/suites.sh) under scripts/env.sh.
#
# clippy-driver is the workspace's compiler here: the lints of `cargo clippy --all-targets -D
# warnings` fail the build of the workspace's own crates (the libraries, the binaries and every
# test), while the dependencies are compiled once, instead of checked by clippy and then built
# again (about two minutes of a cold make test on two cores). CLIPPY_ARGS is how cargo clippy
# hands its arguments to clippy-driver. The variables stay set for the suites, so cargo test
# finds everything built. The Terraform and docs checks run beside the build.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .build
export RUSTC_WORKSPACE_WRAPPER=clippy-driver
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

log="$root/.build/check.log"
scripts/check.sh --no-clippy >"$log" 2>&1 &
checks=$!
trap 'kill "$checks" 2>/dev/null || true' INT TERM

status=0
# The suites run the tests crate's suites on their own (scripts/suites.sh): built here too, so
# nothing is left to build while they run.
(cargo build --workspace --bins && cargo test --workspace --no-run &&
  cargo test -p totesys-tests --lib --tests --no-run) || status=1
wait "$checks" || status=1
cat "$log"
if [[ "$status" != 0 ]]; then
  echo "make test: the checks or the build failed; no suite ran" >&2
  exit 1
fi
exec scripts/env.sh scripts/suites.sh
