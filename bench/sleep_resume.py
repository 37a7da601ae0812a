"""What resuming a run costs as its history grows: a ctx.sleep resume at round 50 and 800.

The agent bench.sleeper sleeps 0.1 ms n times in a row; every sleep really suspends the
run (it parks WAITING with a timer). This process drives runs from ``agentflow.start``
as a worker would when each timer is due: it waits out the timer (not timed), then
calls ``executor.advance``, which takes the lease, replays the history, completes the
due sleep, records the next one and parks the run again. Round k is the advance that
resumes from the k-th sleep, with k steps of history.

Two runs are driven to rounds EARLY and LATE untimed; then their next REPEATS resumes
are timed alternately, one of each in turn, so both see the same machine load, and the
median of each is reported.

    python -m bench.sleep_resume EARLY LATE REPEATS
"""

from __future__ import annotations

import statistics
import sys
import time
from uuid import UUID

from bench.common import django_site, report


def resume_seconds(run_id: UUID) -> float:
    """Wait until the run's 0.1 ms timer is due, then time one advance of it."""
    from agentflow._engine import executor

    time.sleep(0.0005)
    started = time.perf_counter()
    outcome = executor.advance(run_id, worker="bench")
    elapsed = time.perf_counter() - started
    assert outcome == "waiting", outcome
    return elapsed


def main(early: int, late: int, repeats: int) -> None:
    django_site("agentflow_bench_sleep")
    import agentflow

    runs = {k: agentflow.start("bench.sleeper", {"n": k + repeats + 1}).id for k in (early, late)}
    for k, run_id in runs.items():
        for _ in range(k):  # advance 0 records the first sleep; advance k resumes the k-th
            resume_seconds(run_id)
    timings: dict[int, list[float]] = {early: [], late: []}
    for _ in range(repeats):
        for k, run_id in runs.items():
            timings[k].append(resume_seconds(run_id))
    report(
        {
            "resume_early_ms": statistics.median(timings[early]) * 1000,
            "resume_late_ms": statistics.median(timings[late]) * 1000,
        }
    )


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
