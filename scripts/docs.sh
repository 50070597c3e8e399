#!/usr/bin/env bash
# make docs: builds the book, docs/ into docs/book/, with mdBook (installed
# into .build/tools from crates.io on first use, at the version pinned here, without its
# server, watcher and search index), then checks every link (scripts/check-docs.py).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=0.5.4
tools="$root/.build/tools"
mdbook="$tools/bin/mdbook"
if [[ "$("$mdbook" --version 2>/dev/null)" != "mdbook v$version" ]]; then
  # A debug build: it compiles in about half the time and renders a dozen pages as fast.
  cargo install mdbook --version "$version" --locked --no-default-features --debug \
    --root "$tools" --quiet
fi
"$mdbook" build "$root/docs"
python3 "$root/scripts/check-docs.py" "$root"
