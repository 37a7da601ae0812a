"""DBOS Transact's per-step cost on the same PostgreSQL: a long workflow and 3-step ones."""

from __future__ import annotations

import logging
import sys
import time

from bench.common import fresh_database, mean_ms, per_step_ms, report

stamps: list[float] = []


def main(steps: int, workflows: int, early: int) -> None:
    from dbos import DBOS

    url = fresh_database("agentflow_bench_dbos")
    DBOS(config={"name": "agentflow-bench", "system_database_url": url, "log_level": "WARNING"})
    logging.getLogger("dbos").setLevel(logging.WARNING)

    @DBOS.step()
    def tick(i: int) -> int:
        stamps.append(time.perf_counter())
        return i

    @DBOS.workflow()
    def long_workflow(n: int) -> int:
        for i in range(n):
            tick(i)
        return n

    @DBOS.workflow()
    def three() -> int:
        return sum(tick(i) for i in range(3))

    DBOS.launch()
    try:
        long_workflow(steps)
        results = {"dbos_step": per_step_ms(stamps, early, steps)}
        timings = []
        for _ in range(workflows):
            started = time.perf_counter()
            three()
            timings.append(time.perf_counter() - started)
        results["dbos_three"] = mean_ms(timings[10:], per=3)
    finally:
        DBOS.destroy()
    report(results)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
