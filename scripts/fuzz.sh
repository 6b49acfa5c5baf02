#!/usr/bin/env bash
# `make fuzz`: the property tests of the three parsers that read untrusted input
# (push notifications, catalogue pages, the Basic-auth header), tests/tests/fuzz.rs,
# with FUZZ_CASES inputs per property (default 100,000; `make test` runs 1,000),
# one property at a time so that each one's time is its own. Prints the counts
# and times at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

export FUZZ_CASES="${FUZZ_CASES:-100000}"
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$target_dir/fuzz"
log="$target_dir/fuzz/fuzz.log"
started=$(date +%s)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace -E 'binary(fuzz)' --no-capture "$@" 2>&1 | tee "$log"
else
  cargo test --workspace --test fuzz "$@" -- --nocapture --test-threads 1 2>&1 | tee "$log"
fi
echo "== $FUZZ_CASES cases per property, $(( $(date +%s) - started )) s in all (log: $log)"
grep '^fuzz ' "$log"
