"""DBOS Transact's per-step cost on the same PostgreSQL: a long workflow and 3-step ones.

Workflows are called in this process, the way agentflow's runs are advanced in
bench.agentflow_steps.
"""

from __future__ import annotations

import sys
import time

from bench.common import fresh_database, mean_ms, per_step_ms, report


def main(steps: int, workflows: int, early: int) -> None:
    from dbos import DBOS

    from bench.dbos_app import launch, long_workflow, stamps, three

    launch(fresh_database("agentflow_bench_dbos"))
    try:
        long_workflow(steps)
        results = {"dbos_step": per_step_ms(stamps, early, steps)}
        timings = []
        for _ in range(workflows):
            started = time.perf_counter()
            three()
            timings.append(time.perf_counter() - started)
        results["dbos_three"] = mean_ms(timings[10:])
    finally:
        DBOS.destroy()
    report(results)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
