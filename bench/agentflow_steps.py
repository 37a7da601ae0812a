"""agentflow's per-step cost: ctx.step in one long run, and a 3-step run end to end.

Runs are advanced in this process by the engine itself, on PostgreSQL, exactly as a
worker's advance task does after it receives the run id. A 3-step run is timed from
``agentflow.start`` (its row, its run.created event and its wake-up message on the
embedded in-memory broker) to the advance that returns "succeeded", as DBOS's 3-step
workflow in bench.dbos_steps is timed from its call to its return.
"""

from __future__ import annotations

import sys
import time

from bench.common import django_site, mean_ms, per_step_ms, report


def main(steps: int, workflows: int, early: int, late: int, window: int) -> None:
    django_site("agentflow_bench")
    import agentflow
    from agentflow._engine import executor
    from bench.agents import stamps

    run = agentflow.start("bench.steps", {"n": steps})
    assert executor.advance(run.id, worker="bench") == "succeeded"
    results = {
        "agentflow_step": per_step_ms(stamps, early, steps),
        "step_early": per_step_ms(stamps, early, early + window),
        "step_late": per_step_ms(stamps, late, late + window),
    }
    timings = []
    for _ in range(workflows):
        started = time.perf_counter()
        run = agentflow.start("bench.three")
        assert executor.advance(run.id, worker="bench") == "succeeded"
        timings.append(time.perf_counter() - started)
    results["agentflow_three"] = mean_ms(timings[10:])
    report(results)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
