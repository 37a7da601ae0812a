"""agentflow's per-step cost: ctx.step in one long run, and a 3-step run end to end.

Runs are advanced in this process by the engine itself, on PostgreSQL, exactly as a
worker's advance task does after it receives the run id.
"""

from __future__ import annotations

import os
import sys
import time

from bench.common import fresh_database, mean_ms, per_step_ms, report


def main(steps: int, workflows: int, early: int, late: int, window: int) -> None:
    os.environ["BENCH_DATABASE_URL"] = fresh_database("agentflow_bench")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from agentflow.engine import executor
    from agentflow.models import Run
    from bench.agents import stamps

    run = Run.objects.create(agent="bench.steps", agent_version="1", input={"n": steps})
    assert executor.advance(run.id, worker="bench") == "succeeded"
    results = {
        "agentflow_step": per_step_ms(stamps, early, steps),
        "agentflow_step_early": per_step_ms(stamps, early, early + window),
        "agentflow_step_late": per_step_ms(stamps, late, late + window),
    }
    timings = []
    for _ in range(workflows):
        started = time.perf_counter()
        run = Run.objects.create(agent="bench.three", agent_version="1", input={})
        assert executor.advance(run.id, worker="bench") == "succeeded"
        timings.append(time.perf_counter() - started)
    results["agentflow_three"] = mean_ms(timings[10:], per=3)
    report(results)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
