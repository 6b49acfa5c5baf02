#!/usr/bin/env python3
"""Tests of scripts/backfill.sh without AWS: argument checks, the date arithmetic,
--dry-run, and whole runs against a stand-in `aws` on PATH that records its calls.

Run: python3 scripts/backfill_test.py (part of `make infra-test`).
"""
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "backfill.sh")
FIXTURE = os.path.join(HERE, "..", "infra", "test", "fixtures", "state-machine-events.json")

STACK = "hls-s2-link-fetcher-dev"
STATE_MACHINE_ARN = "arn:aws:states:us-west-2:123456789012:stateMachine:LinkFetching"
FUNCTION_NAME = "hls-s2-link-fetcher-dev-LinkFetcher-abc"

# The stand-in AWS CLI. Its behaviour comes from $FAKE_AWS_DIR/config.json; every
# call is appended to $FAKE_AWS_DIR/calls.jsonl as its argv.
FAKE_AWS = textwrap.dedent(r'''
    #!/usr/bin/env python3
    import datetime as dt, json, os, sys
    d = os.environ["FAKE_AWS_DIR"]
    cfg = json.load(open(os.path.join(d, "config.json")))
    argv = sys.argv[1:]
    with open(os.path.join(d, "calls.jsonl"), "a") as f:
        f.write(json.dumps(argv) + "\n")
    if argv == ["--version"]:
        print(cfg.get("version", "aws-cli/2.17.0 Python/3.12.6 Linux/6.1 exe/x86_64"))
        sys.exit(0)
    def opt(name):
        return argv[argv.index(name) + 1]
    args = [a for a in argv if a not in ("--output", "json")]
    service, op = args[0], args[1]
    if (service, op) == ("cloudformation", "describe-stacks"):
        if opt("--stack-name") != cfg["stack"]:
            print("An error occurred (ValidationError): Stack does not exist", file=sys.stderr)
            sys.exit(254)
        outputs = [{"OutputKey": k, "OutputValue": v} for k, v in cfg["outputs"].items()]
        print(json.dumps({"Stacks": [{"StackName": cfg["stack"], "Outputs": outputs}]}))
    elif (service, op) == ("stepfunctions", "start-execution"):
        print(json.dumps({"executionArn": cfg["outputs"]["LinkFetchingStateMachineArn"].replace(
            ":stateMachine:", ":execution:") + ":" + opt("--name"), "startDate": "2025-01-22T00:00:00Z"}))
    elif (service, op) == ("stepfunctions", "describe-execution"):
        statuses = cfg["statuses"]
        n = sum(1 for _ in open(os.path.join(d, "calls.jsonl")) if "describe-execution" in _)
        status = statuses[min(n, len(statuses)) - 1]
        print(json.dumps({"executionArn": opt("--execution-arn"), "status": status,
                          "error": "States.TaskFailed" if status == "FAILED" else None,
                          "cause": "link-fetcher failed" if status == "FAILED" else None}))
    elif (service, op) == ("lambda", "invoke"):
        event = json.loads(opt("--payload"))["audit"]
        end = dt.date.fromisoformat(event["end"])
        rows = []
        for k in range(1, event["days"] + 1):
            for p in event["platforms"]:
                date = str(end - dt.timedelta(days=k))
                row = {"date": date, "platform": p, "catalogue_products": 100, "allowed": 90,
                       "recorded": 90, "missing": 0, "requeued": 0, "complete": True}
                row.update(cfg.get("overrides", {}).get(date + " " + p, {}))
                rows.append(row)
        if cfg.get("drop"):
            rows = [r for r in rows if r["date"] + " " + r["platform"] not in cfg["drop"]]
        with open(argv[-1], "w") as f:
            if cfg.get("function_error"):
                json.dump({"errorType": "Error", "errorMessage": "database unreachable"}, f)
            else:
                json.dump({"audit": rows}, f)
        meta = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
        if cfg.get("function_error"):
            meta["FunctionError"] = "Unhandled"
        print(json.dumps(meta))
    else:
        print(f"fake aws: unexpected call {argv}", file=sys.stderr)
        sys.exit(252)
''').lstrip()


class Backfill(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        bin_dir = os.path.join(self.dir.name, "bin")
        os.mkdir(bin_dir)
        aws = os.path.join(bin_dir, "aws")
        with open(aws, "w") as f:
            f.write(FAKE_AWS)
        os.chmod(aws, 0o755)
        self.env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
                    "FAKE_AWS_DIR": self.dir.name}
        self.configure()

    def configure(self, **changes):
        cfg = {
            "stack": STACK,
            "outputs": {"LinkFetchingStateMachineArn": STATE_MACHINE_ARN, "LinkFetcherFunctionName": FUNCTION_NAME},
            "statuses": ["RUNNING", "RUNNING", "SUCCEEDED"],
            **changes,
        }
        with open(os.path.join(self.dir.name, "config.json"), "w") as f:
            json.dump(cfg, f)

    def run_script(self, *args):
        return subprocess.run([SCRIPT, *args], env=self.env, capture_output=True, text=True, timeout=60)

    def calls(self):
        path = os.path.join(self.dir.name, "calls.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]

    def payloads(self, result, prefix):
        return [json.loads(line[len(prefix):]) for line in result.stdout.splitlines() if line.startswith(prefix)]

    # ------------------------------------------------------- arguments and dates

    def test_dry_run_prints_the_execution_input_the_state_machine_expects(self):
        r = self.run_script("--from", "2025-01-15", "--to", "2025-01-21", "--platforms", "S2A,S2B", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(FIXTURE) as f:
            fixture = json.load(f)
        # The same object the infra tests run the state machine definition with.
        self.assertEqual(self.payloads(r, "execution input: "), [fixture["backfill_pairs_request"]])
        self.assertEqual(self.payloads(r, "audit payload: "), [
            {"audit": {"days": 3, "end": "2025-01-22", "platforms": ["S2A", "S2B"], "requeue": True}},
            {"audit": {"days": 3, "end": "2025-01-19", "platforms": ["S2A", "S2B"], "requeue": True}},
            {"audit": {"days": 1, "end": "2025-01-16", "platforms": ["S2A", "S2B"], "requeue": True}},
        ])
        self.assertEqual(self.calls(), [], "a dry run calls no AWS API")

    def test_days_and_exclusive_end(self):
        cases = [
            ("2025-01-21", "2025-01-21", 1, "2025-01-22"),
            ("2024-02-28", "2024-03-01", 3, "2024-03-02"),  # leap day
            ("2023-02-28", "2023-03-01", 2, "2023-03-02"),
            ("2023-12-31", "2023-12-31", 1, "2024-01-01"),
            ("2023-12-30", "2024-01-02", 4, "2024-01-03"),
            ("2024-01-01", "2024-12-31", 366, "2025-01-01"),
        ]
        for first, last, days, end in cases:
            with self.subTest(first=first, last=last):
                r = self.run_script("--from", first, "--to", last, "--dry-run", "--audit-days-per-call", "366")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(self.payloads(r, "execution input: "), [
                    {"date_platform_pairs": {"days": days, "end": end, "platforms": ["S2A", "S2B", "S2C"]}}])
                self.assertEqual(self.payloads(r, "audit payload: "), [
                    {"audit": {"days": days, "end": end, "platforms": ["S2A", "S2B", "S2C"], "requeue": True}}])

    def test_audit_chunks_cover_every_day_once(self):
        r = self.run_script("--from", "2024-01-01", "--to", "2024-12-31", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        covered = []
        for p in self.payloads(r, "audit payload: "):
            self.assertLessEqual(p["audit"]["days"], 3)
            end = dt.date.fromisoformat(p["audit"]["end"])
            covered += [end - dt.timedelta(days=k) for k in range(1, p["audit"]["days"] + 1)]
        self.assertEqual(sorted(covered), [dt.date(2024, 1, 1) + dt.timedelta(days=k) for k in range(366)])
        self.assertEqual(len(set(covered)), 366)

    def test_no_audit_dry_run_prints_only_the_execution_input(self):
        r = self.run_script("--from", "2025-01-15", "--to", "2025-01-15", "--no-audit", "--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.payloads(r, "execution input: ")), 1)
        self.assertEqual(self.payloads(r, "audit payload: "), [])

    def test_bad_arguments(self):
        future = str(dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=2))
        cases = [
            ((), "--from YYYY-MM-DD is required"),
            (("--from", "2025-01-15"), "--to YYYY-MM-DD is required"),
            (("--from", "2025-1-15", "--to", "2025-01-16"), "--from: expected a date YYYY-MM-DD"),
            (("--from", "20250115", "--to", "2025-01-16"), "--from: expected a date YYYY-MM-DD"),
            (("--from", "2025-01-15", "--to", "2023-02-29"), "--to: \"2023-02-29\" is not a date"),
            (("--from", "2025-01-16", "--to", "2025-01-15"), "--from 2025-01-16 is after --to 2025-01-15"),
            (("--from", "2024-01-01", "--to", "2025-01-01"), "367 days; at most 366"),
            (("--from", "2025-01-15", "--to", future), "is in the future"),
            (("--from", "2025-01-15", "--to", "2025-01-16", "--platforms", "S2A,L8"), "--platforms"),
            (("--from", "2025-01-15", "--to", "2025-01-16", "--platforms", ","), "--platforms"),
            (("--from", "2025-01-15", "--to", "2025-01-16", "--platforms", "S2A,S2A"), "twice"),
            (("--from", "2025-01-15", "--to", "2025-01-16", "--stage", "a b"), "--stage"),
            (("--from", "2025-01-15", "--to", "2025-01-16", "--audit-days-per-call", "0"), "--audit-days-per-call"),
            (("--from", "2025-01-15", "--to", "2025-01-16", "--poll-seconds", "x"), "--poll-seconds"),
            (("--from=2025-01-15",), "two words"),
            (("--from",), "--from needs a value"),
            (("--days", "3"), "unknown argument"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                r = self.run_script(*args, "--dry-run")
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(message, r.stderr)
                self.assertEqual(r.stdout, "")
        self.assertEqual(self.calls(), [])

    # ------------------------------------------------ runs against the stand-in

    def test_a_run_starts_waits_audits_and_prints_each_day(self):
        r = self.run_script("--from", "2025-01-20", "--to", "2025-01-21", "--poll-seconds", "0")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        calls = [[a for a in c if a not in ("--output", "json")] for c in self.calls() if c != ["--version"]]
        self.assertEqual(calls[0], ["cloudformation", "describe-stacks", "--stack-name", STACK])
        self.assertEqual(calls[1][:4], ["stepfunctions", "start-execution", "--state-machine-arn", STATE_MACHINE_ARN])
        start = calls[1]
        self.assertRegex(start[start.index("--name") + 1], r"^backfill-2025-01-20-2025-01-21-\d{8}T\d{6}Z$")
        self.assertEqual(json.loads(start[start.index("--input") + 1]),
                         {"date_platform_pairs": {"days": 2, "end": "2025-01-22", "platforms": ["S2A", "S2B", "S2C"]}})
        self.assertEqual([c[1] for c in calls[2:5]], ["describe-execution"] * 3)
        invoke = calls[5]
        self.assertEqual(invoke[:2], ["lambda", "invoke"])
        self.assertEqual(invoke[invoke.index("--function-name") + 1], FUNCTION_NAME)
        self.assertEqual(invoke[invoke.index("--cli-read-timeout") + 1], "900")
        self.assertEqual(invoke[invoke.index("--cli-binary-format") + 1], "raw-in-base64-out")
        self.assertEqual(json.loads(invoke[invoke.index("--payload") + 1]),
                         {"audit": {"days": 2, "end": "2025-01-22", "platforms": ["S2A", "S2B", "S2C"], "requeue": True}})
        self.assertEqual(len(calls), 6)
        self.assertIn("RUNNING", r.stdout)
        self.assertIn("SUCCEEDED", r.stdout)
        lines = [l.split() for l in r.stdout.splitlines() if l.startswith("2025-01-2")]
        self.assertEqual(lines, [
            [d, p, "100", "90", "90", "0", "0", "true"] for d in ("2025-01-20", "2025-01-21") for p in ("S2A", "S2B", "S2C")
        ])
        header = next(l for l in r.stdout.splitlines() if l.startswith("date"))
        self.assertEqual(header.split(), ["date", "platform", "catalogue_products", "allowed", "recorded",
                                          "missing", "requeued", "complete"])

    def test_stage_and_stack_name_choose_the_stack(self):
        self.configure(stack="hls-s2-link-fetcher-prod", statuses=["SUCCEEDED"])
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21", "--stage", "prod", "--no-audit")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.configure(stack="custom", statuses=["SUCCEEDED"])
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21", "--stack-name", "custom", "--no-audit")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21", "--no-audit")
        self.assertEqual(r.returncode, 1)
        self.assertIn("could not describe the stack hls-s2-link-fetcher-dev", r.stderr)

    def test_missing_outputs_are_named(self):
        self.configure(outputs={"LinkFetchingStateMachineArn": STATE_MACHINE_ARN})
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no output LinkFetcherFunctionName", r.stderr)

    def test_no_audit_invokes_nothing(self):
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21", "--no-audit", "--poll-seconds", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(any("lambda" in c for c in self.calls()))

    def test_a_failed_execution_fails_without_an_audit(self):
        for status in ("FAILED", "TIMED_OUT", "ABORTED"):
            with self.subTest(status=status):
                os.remove(os.path.join(self.dir.name, "calls.jsonl")) if self.calls() else None
                self.configure(statuses=["RUNNING", status])
                r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21", "--poll-seconds", "0")
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                self.assertIn(f"the execution ended {status}", r.stderr)
                self.assertFalse(any("lambda" in c for c in self.calls()))

    def test_missing_beyond_requeued_exits_3(self):
        self.configure(statuses=["SUCCEEDED"], overrides={"2025-01-21 S2B": {"missing": 5, "requeued": 3}})
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("1 day/platform(s) still missing", r.stderr)
        self.assertIn(["2025-01-21", "S2B", "100", "90", "90", "5", "3", "true"],
                      [l.split() for l in r.stdout.splitlines()])

    def test_requeued_everything_missing_is_complete(self):
        self.configure(statuses=["SUCCEEDED"], overrides={"2025-01-21 S2B": {"missing": 5, "requeued": 5}})
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Complete: 3 day/platform(s) audited", r.stdout)

    def test_an_incomplete_day_exits_3(self):
        self.configure(statuses=["SUCCEEDED"], overrides={"2025-01-20 S2C": {"complete": False}})
        r = self.run_script("--from", "2025-01-20", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("1 not read completely", r.stderr)

    def test_a_day_the_audit_did_not_answer_exits_3(self):
        self.configure(statuses=["SUCCEEDED"], drop=["2025-01-21 S2A"])
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("answered nothing for 2025-01-21 S2A", r.stderr)

    def test_a_failed_audit_invocation_exits_1(self):
        self.configure(statuses=["SUCCEEDED"], function_error=True)
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("database unreachable", r.stderr)

    def test_several_audit_invocations_print_one_sorted_table(self):
        self.configure(statuses=["SUCCEEDED"])
        r = self.run_script("--from", "2025-01-15", "--to", "2025-01-21", "--platforms", "S2A")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(sum(1 for c in self.calls() if c[:2] == ["--output", "json"] and "invoke" in c), 3)
        dates = [l.split()[0] for l in r.stdout.splitlines() if l.startswith("2025-")]
        self.assertEqual(dates, [f"2025-01-{d}" for d in range(15, 22)])

    def test_cli_v1_takes_the_payload_without_cli_binary_format(self):
        self.configure(statuses=["SUCCEEDED"], version="aws-cli/1.45.11 Python/3.11.7 Linux/6.1 botocore/1.43.11")
        r = self.run_script("--from", "2025-01-21", "--to", "2025-01-21")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        invoke = next(c for c in self.calls() if "invoke" in c)
        self.assertNotIn("--cli-binary-format", invoke)


if __name__ == "__main__":
    unittest.main()
