"""Write apps/research/corpus/notes.jsonl: the research demo's corpus of short notes.

The notes are generated, deterministically, from the facts below: a few hundred short
engineering notes of a made-up company (Northwind), enough for full-text search to rank.
Run it again after changing the facts; the file is committed so the demo needs nothing.

    python scripts/make_corpus.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "apps" / "research" / "corpus" / "notes.jsonl"

TOPICS = {
    "durable execution": [
        "A workflow that checkpoints each step in the database resumes after a crash without "
        "repeating finished steps.",
        "Replaying recorded history lets new code verify that it takes the same path as old runs.",
        "Non-determinism in agent code, such as reading the clock, breaks replay unless the value "
        "is recorded as a step.",
        "Leases with heartbeats let another worker take over a run whose worker died.",
    ],
    "celery": [
        "Celery chords run a group of tasks in parallel and call a callback when all finish.",
        "A worker prefetch multiplier of one keeps control messages from waiting behind slow "
        "tasks.",
        "Redis as a broker redelivers unacknowledged messages after the visibility timeout.",
        "Task routing sends slow tools to their own queues so they cannot starve fast work.",
    ],
    "postgresql": [
        "Prepared statements save the server from parsing and planning the same query again.",
        "Full-text search ranks documents with ts_rank over a tsvector of their words.",
        "A data-modifying common table expression writes several rows in one round trip.",
        "SELECT FOR UPDATE SKIP LOCKED lets many workers claim rows without blocking each other.",
    ],
    "rate limits": [
        "A sliding window of start times keeps any one-second window under the limit.",
        "Fleet-wide rate limits need a shared store such as Redis, not per-process counters.",
        "Honouring a Retry-After header avoids hammering a provider that asked for a pause.",
        "Concurrency caps bound how many calls to one tool overlap across all workers.",
    ],
    "approvals": [
        "Payments above a threshold wait for a person to approve them in the admin.",
        "An approval bound to a hash of the arguments cannot be reused for other arguments.",
        "A reviewer may edit the proposed data before approving it.",
        "Approvals that expire fall back to a default decision, usually a rejection.",
    ],
    "budgets": [
        "A token budget reserves an estimate before each model call and settles the real usage.",
        "Conditional updates make concurrent reservations unable to overspend a budget.",
        "Monthly budgets reset at the start of each calendar month in UTC.",
        "Prices per million tokens turn reported usage into a cost in dollars.",
    ],
    "language models": [
        "Streaming tokens lets a reader see an answer while the model is still writing it.",
        "Tool calling lets a model ask for a function to run and read its result.",
        "Several tool calls in one turn can run in parallel before the model continues.",
        "A model call that fails with HTTP 400 will fail again if retried unchanged.",
    ],
    "billing": [
        "Reconciliation matches invoices against bank credits by their references.",
        "A short payment leaves an outstanding amount that is either collected or credited.",
        "Duplicate payments are refunded after the customer confirms their bank details.",
        "Idempotency keys stop a retried payment from charging a customer twice.",
    ],
    "observability": [
        "Structured logs carry the run id so one run's lines can be found across workers.",
        "Traces propagated across task hops show where a slow run spends its time.",
        "Live event streams let operators watch a run's steps as they happen.",
        "Retention jobs delete old finished runs in small batches to avoid long locks.",
    ],
    "security": [
        "Secrets are redacted before anything is stored or streamed.",
        "Every websocket checks the session user's permission before sending a frame.",
        "Tool output shown in HTML is escaped so it cannot inject scripts.",
        "Cross-site request forgery tokens protect every form that changes state.",
    ],
    "deployment": [
        "Rolling deploys keep old agent versions registered while their runs finish.",
        "Beat schedules recurring runs but the runtime must not depend on it for recovery.",
        "Health checks let the orchestrator restart a worker that stopped consuming.",
        "Database connection poolers in transaction mode cannot keep prepared statements.",
    ],
    "testing": [
        "Crash tests kill real worker processes to prove that no finished step repeats.",
        "A local server that speaks a provider's API tests the real client without a network.",
        "Tests wait on conditions with deadlines instead of sleeping for fixed times.",
        "Benchmarks compare against peers measured in the same run on the same machine.",
    ],
}
TEAMS = ["payments", "platform", "data", "support", "growth", "infrastructure"]
KINDS = ["design note", "incident review", "how-to", "decision record", "runbook"]


def notes() -> list[dict]:
    rng = random.Random(2026)
    out = []
    for topic, facts in TOPICS.items():
        for n in range(25):
            team, kind = rng.choice(TEAMS), rng.choice(KINDS)
            chosen = rng.sample(facts, k=rng.randint(2, 3))
            other = rng.choice([t for t in TOPICS if t != topic])
            body = (
                f"This {kind} from the {team} team is about {topic}. "
                + " ".join(chosen)
                + f" It also touches on {other}: {rng.choice(TOPICS[other])}"
            )
            title = f"{topic.capitalize()}: {kind} {n + 1} ({team})"
            out.append({"slug": f"{topic.replace(' ', '-')}-{n + 1}", "title": title,
                        "topic": topic, "body": body})  # fmt: skip
    return out


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for note in notes():
            f.write(json.dumps(note) + "\n")
    print(f"wrote {OUT} ({len(notes())} notes)")
