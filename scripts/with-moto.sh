#!/usr/bin/env bash
# Runs a command with a fresh moto_server (SQS, Secrets Manager) on a free port,
# exported as AWS_ENDPOINT_URL with dummy credentials, and stops it afterwards.
set -euo pipefail

if ! command -v moto_server >/dev/null 2>&1; then
  echo "moto_server is not installed: installing moto[server] from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  hash -r
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  command -v moto_server >/dev/null 2>&1 || { echo "moto_server still not on PATH after pip install" >&2; exit 1; }
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="${TMPDIR:-/tmp}/moto-$port.log"
moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "moto_server exited; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
echo "moto_server on $AWS_ENDPOINT_URL (log: $log)" >&2
"$@"
