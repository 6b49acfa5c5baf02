#!/usr/bin/env python3
"""The soak's queue server: ../shared/tools/fake_sqs.py with a journal, so that killing it
(SIGKILL) and starting it again on the same port loses no message, as an SQS outage loses none.

Every queue created, message accepted and message deleted is appended to the journal (flushed
before the answer leaves, under fake_sqs's one lock, so an answer the client saw is on record);
a restart replays it: the queues again, and every message accepted and not deleted, with its
MessageId and SentTimestamp, visible again (a message in flight when the server died is
received a second time, as SQS redelivers after a visibility timeout).

usage: durable_sqs.py --fake-sqs PATH --journal PATH --port PORT [fake_sqs.py's other flags]
"""
import importlib.util
import json
import os
import sys
import time


def option(name):
    """Removes `name VALUE` from argv and returns VALUE."""
    index = sys.argv.index(name)
    value = sys.argv[index + 1]
    del sys.argv[index:index + 2]
    return value


fake_sqs_path = option("--fake-sqs")
journal_path = option("--journal")
spec = importlib.util.spec_from_file_location("fake_sqs", fake_sqs_path)
fake = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fake)


def replay():
    if not os.path.exists(journal_path):
        return 0
    sent = {}  # message id -> (queue, body, sent ms), in journal order
    with open(journal_path, encoding="utf-8") as journal:
        for line in journal:
            try:
                entry = json.loads(line)
            except ValueError:
                break  # the line a killed server was writing
            op = entry["op"]
            if op == "queue" and entry["name"] not in fake.QUEUES:
                fake.QUEUES[entry["name"]] = fake.Queue(entry["name"], entry.get("attributes"))
            elif op == "send":
                sent[entry["id"]] = (entry["queue"], entry["body"], entry["sent"])
            elif op == "delete":
                sent.pop(entry["id"], None)
    now = time.monotonic()
    for message_id, (queue, body, sent_ms) in sent.items():
        q = fake.QUEUES.get(queue)
        if q is None:
            continue
        m = fake.Msg(body, None, None)
        m.id, m.sent = message_id, sent_ms
        q.enqueue(m, 0, now)
    return len(sent)


restored = replay()
journal = open(journal_path, "a", encoding="utf-8")


def record(entry):
    journal.write(json.dumps(entry, ensure_ascii=False) + "\n")
    journal.flush()  # in the kernel before the answer is sent: survives SIGKILL


def journaled_create(op):
    def create(p, host):
        result = op(p, host)
        record({"op": "queue", "name": p["QueueName"], "attributes": p.get("Attributes")})
        return result
    return create


def journaled_send(op):
    def send(p, host):
        result = op(p, host)
        queue = fake.queue_name_of(p)
        q = fake.QUEUES[queue]
        record({"op": "send", "queue": queue, "id": result["MessageId"],
                "body": p["MessageBody"], "sent": q.live[result["MessageId"]].sent})
        return result
    return send


def journaled_send_batch(op):
    def send_batch(p, host):
        result = op(p, host)
        queue = fake.queue_name_of(p)
        q = fake.QUEUES[queue]
        bodies = {e["Id"]: e["MessageBody"] for e in p["Entries"]}
        for entry in result["Successful"]:
            m = q.live[entry["MessageId"]]
            record({"op": "send", "queue": queue, "id": m.id, "body": bodies[entry["Id"]],
                    "sent": m.sent})
        return result
    return send_batch


def journaled_delete(op, handles):
    def delete(p, host):
        result = op(p, host)
        queue = fake.queue_name_of(p)
        for handle in handles(p):
            parsed = fake.parse_receipt(handle)
            if parsed is not None:
                record({"op": "delete", "queue": queue, "id": parsed[0]})
        return result
    return delete


fake.OPS["CreateQueue"] = journaled_create(fake.OPS["CreateQueue"])
fake.OPS["SendMessage"] = journaled_send(fake.OPS["SendMessage"])
fake.OPS["SendMessageBatch"] = journaled_send_batch(fake.OPS["SendMessageBatch"])
fake.OPS["DeleteMessage"] = journaled_delete(
    fake.OPS["DeleteMessage"], lambda p: [p.get("ReceiptHandle")])
fake.OPS["DeleteMessageBatch"] = journaled_delete(
    fake.OPS["DeleteMessageBatch"], lambda p: [e.get("ReceiptHandle") for e in p.get("Entries") or []])

if restored:
    print(f"durable_sqs: {restored} message(s) restored from {journal_path}", file=sys.stderr, flush=True)
fake.main()
