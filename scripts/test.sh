#!/usr/bin/env bash
# `make test`: every test against a real Postgres and a real SQS-compatible server.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DATABASE_URL:-}" ]; then
  if [ -n "${DOCKER_HOST:-}" ] || [ -S /var/run/docker.sock ]; then
    if [ ! -f .env ]; then
      echo "DATABASE_URL is not set and there is no .env: copy .env.example to .env so testcontainers can start Postgres" >&2
      exit 1
    fi
    echo "DATABASE_URL is not set: testcontainers will start Postgres with the credentials in .env" >&2
  else
    echo "The tests need Postgres: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)," >&2
    echo "or run where Docker exists so that testcontainers can start one." >&2
    exit 1
  fi
fi

if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --no-fail-fast)
else
  runner=(cargo test --workspace --no-fail-fast)
fi
exec scripts/with-moto.sh "${runner[@]}" "$@"
