"""Redacting a 1 MB payload of the worst kind for the default patterns, and the capped kinds.

The worst kind: long runs of [A-Za-z0-9] broken by near-miss '@'s (each run looks like the
start of an email address that never completes), and long hex strings. A backtracking
engine takes time quadratic in each run; RE2 one pass. A few real secrets make the value
change, so it is also rewritten. Two more payloads bound what matches cost: one secret
every 7 characters (MAX_MATCHES of them are replaced, then the rest whole), and 200,000
short strings. Each is timed REPEATS times through ``redact_json``, the median reported.

    python -m bench.redaction [REPEATS]
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time

from bench.common import django_site, report

SIZE = 1_000_000
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def near_misses(size: int, rng: random.Random) -> str:
    """Runs of [A-Za-z0-9] with '@'s that never make an address, and hex strings."""
    parts: list[str] = []
    length = 0
    while length < size:
        kind = rng.random()
        if kind < 0.5:  # name@domain.x1: no top-level domain of two letters
            run = "".join(rng.choices(ALNUM, k=rng.randint(500, 4000)))
            part = f"{run}@{run[: rng.randint(50, 500)]}.x1 "
        elif kind < 0.8:
            part = "".join(rng.choices("0123456789abcdef", k=rng.randint(2000, 8000))) + " "
        else:  # a run of letters and digits, then an '@' and no domain at all
            part = "".join(rng.choices(ALNUM, k=rng.randint(2000, 8000))) + "@ "
        parts.append(part)
        length += len(part)
    return "".join(parts)


def worst_payload(rng: random.Random) -> str:
    chunks = [near_misses(SIZE // 16, rng) for _ in range(16)]
    for i in range(0, 16, 2):  # a few real secrets, so the value is rewritten too
        chunks[i] += f" mail ann{i}@example.org key sk-{'x' * 24}{i}"
    text = json.dumps({"output": chunks}, separators=(",", ":"))
    return text[: SIZE - 2] + '"]}' if len(text) > SIZE else text


def timed(text: str, repeats: int) -> float:
    from agentflow._guardrails.redaction import redact_json

    redact_json(text)  # compiles the patterns
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        redact_json(text)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(repeats: int) -> None:
    django_site("agentflow_bench_redaction")
    rng = random.Random(20)
    worst = worst_payload(rng)
    json.loads(worst)  # still valid JSON after trimming to SIZE
    dense = json.dumps(["a@b.cc " * (SIZE // 7)])
    short = json.dumps(["ab"] * (SIZE // 5 - 1) + ["ann@example.org"], separators=(",", ":"))
    report(
        {
            "redaction_payload_bytes": len(worst),
            "redaction_worst_1mb_ms": timed(worst, repeats),
            "redaction_dense_1mb_ms": timed(dense, repeats),
            "redaction_short_strings_1mb_ms": timed(short, repeats),
        }
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
