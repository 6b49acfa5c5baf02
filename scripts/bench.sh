#!/usr/bin/env bash
# `make bench`: release builds of both functions, the criterion micro benchmarks,
# then every measured run of BENCHMARKS.md against real Postgres and a fresh
# moto_server. Flags are passed to the runner (benches/src/main.rs), e.g.
#   scripts/bench.sh --page-delay-ms 500 --fetch-runs 5 --sections day-fetch
# Results: target/bench/summary.md (the tables), target/bench/results.json, and
# the logs of every process under target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# moto slows down as messages wait in a queue: at 12,000 products a SendMessageBatch
# attempt took longer than the functions' default 10 s attempt timeout here.
export AWS_ATTEMPT_TIMEOUT_SECONDS="${AWS_ATTEMPT_TIMEOUT_SECONDS:-60}"
started=$(date +%s)

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is not installed: installing it from Debian" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq wrk
fi

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/bench"
mkdir -p "$out"

echo "== building the release binaries (the profile of the Lambda builds)" >&2
cargo build --release -p link-fetcher -p link-subscription-handler -p benchmarks

# The Lambda zips are `make build`'s (cargo-lambda, arm64 by default) when they
# exist; the runner also reports this stand-in: the release binary zipped as
# `bootstrap`, which is what cargo-lambda packages.
mkdir -p "$out/zip"
for function in link-fetcher link-subscription-handler; do
  python3 - "$target_dir/release/$function" "$out/zip/$function.zip" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.write(sys.argv[1], "bootstrap")
PY
done

echo "== criterion micro benchmarks" >&2
CRITERION_HOME="$out/criterion" cargo bench -p hls-core --bench pure

echo "== day fetch, push load, start-up (Postgres at DATABASE_URL, moto SQS)" >&2
scripts/with-moto.sh "$target_dir/release/benchmarks" \
  --fetcher "$target_dir/release/link-fetcher" \
  --handler "$target_dir/release/link-subscription-handler" \
  --out-dir "$out" \
  --criterion-dir "$out/criterion" \
  --lambda-dir "$target_dir/lambda" \
  --release-zip-dir "$out/zip" \
  "$@"

echo "make bench took $(( $(date +%s) - started )) s" >&2
