#!/usr/bin/env bash
# `make soak`: both functions under load for 5 minutes while Postgres restarts,
# the queue server stops and the fetcher is killed mid-page (twice each), then a
# check of the full history (soak/, RELIABILITY.md). It needs no DATABASE_URL
# and no moto: it starts its own Postgres cluster (initdb, a free port) and its
# own queue server (../shared/tools/fake_sqs.py), and removes them at the end.
# Flags go to the soak program, e.g.
#   scripts/soak.sh --duration-seconds 600 --clients 64
# Output: the report on stdout; report.txt, report.json, history.jsonl and every
# process's log in target/soak/<UTC time>/ (or SOAK_OUT).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="${SOAK_OUT:-$target_dir/soak/$(date -u +%Y%m%dT%H%M%SZ)}"

# The same build as `make test` (the same features, so nothing is rebuilt twice).
cargo build --workspace --all-targets
exec "$target_dir/debug/soak" --out-dir "$out" "$@"
