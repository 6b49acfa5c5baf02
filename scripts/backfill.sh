#!/usr/bin/env bash
# Backfill a range of UTC days: run the Link Fetching state machine over exactly
# those days, wait for it, then audit them against the CDSE catalogue (re-queueing
# what is still missing) and print one line per (day, platform).
#
#   scripts/backfill.sh --from 2025-01-15 --to 2025-01-21 [--platforms S2A,S2B,S2C]
#                       [--stage dev | --stack-name NAME] [--region REGION]
#                       [--no-audit] [--dry-run] [--poll-seconds 30] [--audit-days-per-call 3]
#
# Needs bash, the AWS CLI (v2) with credentials, and python3 (JSON and dates).
# --dry-run prints the execution input and the audit payload(s) and calls nothing.
#
# Exit status: 0 done and complete; 1 an AWS call, the execution or the audit
# invocation failed; 2 bad arguments; 3 the audit found products still missing
# after re-queueing (missing > requeued) or could not read a day completely.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/backfill.sh --from YYYY-MM-DD --to YYYY-MM-DD [options]

Fetches the links of the UTC days FROM..TO (both included) with the stack's Link
Fetching state machine, waits for it, then audits the same days with link-fetcher
(requeue on) and prints one line per day and platform.

  --from, --to YYYY-MM-DD     first and last day (at most 366 days, TO not in the future)
  --platforms S2A,S2B,S2C     platforms (default S2A,S2B,S2C)
  --stage STAGE               stage of the stack hls-s2-link-fetcher-STAGE (default dev)
  --stack-name NAME           the stack's name, if deployed with -c stackName=...
  --region REGION             AWS region (default: the AWS CLI's)
  --no-audit                  only run the state machine
  --dry-run                   print the payloads; call nothing
  --poll-seconds N            between execution status checks (default 30)
  --audit-days-per-call N     days audited per link-fetcher invocation (default 3, as
                              the daily audit: each invocation has at most 15 minutes)

Exit status: 0 complete, 1 failure, 2 bad arguments, 3 the audit found missing
products it could not re-queue, or days it could not read completely.
EOF
}

die_usage() {
  echo "backfill: $*" >&2
  echo "(scripts/backfill.sh --help for usage)" >&2
  exit 2
}
die() {
  echo "backfill: $*" >&2
  exit 1
}

from='' to='' platforms='S2A,S2B,S2C' stage='dev' stack_name='' region=''
audit=1 dry_run=0 poll_seconds=30 audit_chunk=3
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --no-audit) audit=0; shift; continue ;;
    --dry-run) dry_run=1; shift; continue ;;
    --from|--to|--platforms|--stage|--stack-name|--region|--poll-seconds|--audit-days-per-call)
      [ $# -ge 2 ] && [[ "$2" != --* ]] || die_usage "$1 needs a value"
      case "$1" in
        --from) from=$2 ;;
        --to) to=$2 ;;
        --platforms) platforms=$2 ;;
        --stage) stage=$2 ;;
        --stack-name) stack_name=$2 ;;
        --region) region=$2 ;;
        --poll-seconds) poll_seconds=$2 ;;
        --audit-days-per-call) audit_chunk=$2 ;;
      esac
      shift 2 ;;
    --*=*) die_usage "write \"${1%%=*} ${1#*=}\" (option and value as two words)" ;;
    *) die_usage "unknown argument \"$1\"" ;;
  esac
done

command -v python3 >/dev/null 2>&1 || die "python3 is needed (JSON and dates)"
[ -n "$from" ] || die_usage "--from YYYY-MM-DD is required"
[ -n "$to" ] || die_usage "--to YYYY-MM-DD is required"
[[ "$stage" =~ ^[A-Za-z0-9_-]{1,32}$ ]] || die_usage "--stage: letters, digits, - or _ (got \"$stage\")"
[[ "$poll_seconds" =~ ^[0-9]{1,4}$ ]] || die_usage "--poll-seconds: a whole number of seconds (got \"$poll_seconds\")"
[ -z "$region" ] || [[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || die_usage "--region: e.g. us-west-2 (got \"$region\")"
stack_name=${stack_name:-hls-s2-link-fetcher-$stage}

# The plan, computed and validated in one place: "days<TAB>end", the execution
# input, then one audit payload per invocation (newest days first).
plan=$(python3 - "$from" "$to" "$platforms" "$audit_chunk" <<'PY'
import datetime as dt, json, re, sys

def fail(message):
    print(f"backfill: {message}", file=sys.stderr)
    sys.exit(2)

def day(option, text):
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        fail(f"{option}: expected a date YYYY-MM-DD, got \"{text}\"")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as e:
        fail(f"{option}: \"{text}\" is not a date ({e})")

first, last = day("--from", sys.argv[1]), day("--to", sys.argv[2])
if first > last:
    fail(f"--from {first} is after --to {last}")
today = dt.datetime.now(dt.timezone.utc).date()
if last > today:
    fail(f"--to {last} is in the future (today is {today} UTC)")
days = (last - first).days + 1
if days > 366:
    fail(f"{first}..{last} is {days} days; at most 366 per backfill (split the range)")

platforms = [p.strip() for p in sys.argv[3].split(",") if p.strip()]
if not platforms:
    fail("--platforms: give at least one, e.g. S2A,S2B,S2C")
for p in platforms:
    if not re.fullmatch(r"S2[A-Z]", p):
        fail(f"--platforms: expected Sentinel-2 platforms like S2A, got \"{p}\"")
if len(set(platforms)) != len(platforms):
    fail(f"--platforms: {','.join(platforms)} names a platform twice")

if not re.fullmatch(r"[0-9]{1,3}", sys.argv[4]) or not 1 <= int(sys.argv[4]) <= 366:
    fail(f"--audit-days-per-call: a whole number from 1 to 366, got \"{sys.argv[4]}\"")
chunk = int(sys.argv[4])

end = last + dt.timedelta(days=1)  # exclusive
print(f"{days}\t{end}")
print(json.dumps({"date_platform_pairs": {"days": days, "end": str(end), "platforms": platforms}}))
chunk_end, left = end, days
while left > 0:
    n = min(chunk, left)
    print(json.dumps({"audit": {"days": n, "end": str(chunk_end), "platforms": platforms, "requeue": True}}))
    chunk_end -= dt.timedelta(days=n)
    left -= n
PY
) || { echo "(scripts/backfill.sh --help for usage)" >&2; exit 2; }

{
  IFS=$'\t' read -r days end
  read -r execution_input
  audit_payloads=()
  while read -r line; do audit_payloads+=("$line"); done
} <<<"$plan"

echo "Backfill of $days day(s), $from..$to (end $end, exclusive), stack $stack_name"
if [ "$dry_run" = 1 ]; then
  echo "execution input: $execution_input"
  if [ "$audit" = 1 ]; then
    for payload in "${audit_payloads[@]}"; do echo "audit payload: $payload"; done
  fi
  exit 0
fi

command -v aws >/dev/null 2>&1 || die "the AWS CLI (v2) is needed: https://docs.aws.amazon.com/cli/"
aws_args=(--output json)
[ -z "$region" ] || aws_args+=(--region "$region")
awscli() { aws "${aws_args[@]}" "$@"; }

# --------------------------------------------------------------- stack outputs
outputs=$(awscli cloudformation describe-stacks --stack-name "$stack_name") \
  || die "could not describe the stack $stack_name (credentials, region, --stage or --stack-name?)"
read_outputs() {
  python3 -c '
import json, sys
outputs = {o["OutputKey"]: o["OutputValue"] for o in (json.load(sys.stdin)["Stacks"][0].get("Outputs") or [])}
missing = [k for k in sys.argv[1:] if not outputs.get(k)]
if missing:
    sys.exit("the stack has no output " + ", ".join(missing) + " (deployed from an older infra/?)")
print("\n".join(outputs[k] for k in sys.argv[1:]))
' LinkFetchingStateMachineArn LinkFetcherFunctionName
}
values=$(read_outputs <<<"$outputs") || die "$stack_name: see above"
{ read -r state_machine_arn; read -r function_name; } <<<"$values"

# ----------------------------------------------------- the Link Fetching run
execution_name="backfill-$from-$to-$(date -u +%Y%m%dT%H%M%SZ)"
echo "Starting $execution_name on $state_machine_arn"
echo "  input: $execution_input"
started=$(awscli stepfunctions start-execution --state-machine-arn "$state_machine_arn" \
  --name "$execution_name" --input "$execution_input") || die "could not start the execution"
execution_arn=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["executionArn"])' <<<"$started")
echo "  execution: $execution_arn"
trap 'echo; echo "backfill: interrupted; the execution goes on: $execution_arn" >&2; \
  echo "  stop it with: aws stepfunctions stop-execution --execution-arn $execution_arn" >&2; exit 130' INT TERM

t0=$SECONDS last_status=''
while :; do
  described=$(awscli stepfunctions describe-execution --execution-arn "$execution_arn") \
    || die "could not describe $execution_arn"
  status=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])' <<<"$described")
  if [ "$status" != "$last_status" ]; then
    echo "  $(date -u +%H:%M:%SZ) $status (after $((SECONDS - t0)) s)"
    last_status=$status
  fi
  case "$status" in
    SUCCEEDED) break ;;
    RUNNING|PENDING_REDRIVE) sleep "$poll_seconds" ;;
    *)
      python3 -c '
import json, sys
d = json.load(sys.stdin)
print("backfill: the execution ended " + d["status"] + ": " + (d.get("error") or "") + " " + (d.get("cause") or ""), file=sys.stderr)
' <<<"$described"
      exit 1 ;;
  esac
done
trap - INT TERM

[ "$audit" = 1 ] || { echo "Done (--no-audit: not audited)"; exit 0; }

# ------------------------------------------------------------------- the audit
invoke_args=(--cli-read-timeout 900)
# CLI v2 reads --payload as base64 unless told otherwise; v1 takes it raw.
aws --version 2>&1 | grep -q '^aws-cli/1\.' || invoke_args+=(--cli-binary-format raw-in-base64-out)
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
i=0
for payload in "${audit_payloads[@]}"; do
  i=$((i + 1))
  echo "Auditing ($i/${#audit_payloads[@]}) with $function_name (up to 15 minutes): $payload"
  meta=$(awscli lambda invoke "${invoke_args[@]}" --function-name "$function_name" \
    --payload "$payload" "$workdir/audit-$i.json") || die "could not invoke $function_name"
  if python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get("FunctionError") else 1)' <<<"$meta"; then
    echo "backfill: the audit invocation failed:" >&2
    cat "$workdir/audit-$i.json" >&2
    echo >&2
    exit 1
  fi
done

BACKFILL_END=$end BACKFILL_DAYS=$days BACKFILL_PLATFORMS=$platforms python3 - "$workdir"/audit-*.json <<'PY'
import datetime as dt, json, os, sys

end = dt.date.fromisoformat(os.environ["BACKFILL_END"])
expected = {(str(end - dt.timedelta(days=k)), p.strip())
            for k in range(1, int(os.environ["BACKFILL_DAYS"]) + 1)
            for p in os.environ["BACKFILL_PLATFORMS"].split(",") if p.strip()}
rows = []
for path in sys.argv[1:]:
    with open(path) as f:
        answer = json.load(f)
    if not isinstance(answer, dict) or not isinstance(answer.get("audit"), list):
        print(f"backfill: unexpected audit answer: {json.dumps(answer)[:500]}", file=sys.stderr)
        sys.exit(1)
    rows.extend(answer["audit"])

columns = ["date", "platform", "catalogue_products", "allowed", "recorded", "missing", "requeued", "complete"]
def cell(row, key):
    value = row.get(key, row.get("day") if key == "date" else None)
    return "?" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)

rows.sort(key=lambda r: (str(r.get("date", r.get("day", ""))), str(r.get("platform", ""))))
table = [columns] + [[cell(r, c) for c in columns] for r in rows]
widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
for line in table:
    print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())

def number(row, key):
    value = row.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

gaps = [r for r in rows if number(r, "missing") is None or number(r, "requeued") is None
        or number(r, "missing") > number(r, "requeued")]
incomplete = [r for r in rows if r.get("complete") is not True]
unaudited = sorted(expected - {(str(r.get("date", r.get("day"))), str(r.get("platform"))) for r in rows})
for date, platform in unaudited:
    print(f"backfill: the audit answered nothing for {date} {platform}", file=sys.stderr)
if gaps or incomplete or unaudited:
    print(f"backfill: {len(gaps)} day/platform(s) still missing products after re-queueing, "
          f"{len(incomplete) + len(unaudited)} not read completely: run the backfill again "
          "later, or look at link-fetcher's log", file=sys.stderr)
    sys.exit(3)
print(f"Complete: {len(rows)} day/platform(s) audited, nothing missing that was not re-queued")
PY
