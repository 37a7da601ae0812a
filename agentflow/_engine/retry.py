"""Retry a failed run from its failed step: an operator fixed the cause and lets it go on.

Replay returns a recorded failure at its position, so the failed record is taken away
and the run re-executes from there. Every step before it is kept: no side effect that
already happened runs again. A failed fan-out keeps its succeeded children; its failed
ones run again.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentflow._engine.attempts import queue_of
from agentflow._engine.ports import dispatcher
from agentflow._engine.state import run_actions
from agentflow.models import clock


def retry(run_id: UUID, *, by: str | None = None) -> dict[str, Any] | None:
    """Put a FAILED run back to work at its failed position; return what was retried.

    The run's error names the position it failed at. A failed step there is removed (a
    failed fan-out has its failed children reset instead); when the step there did not
    fail (the agent raised by itself, diverged, or returned a value that cannot be
    stored), nothing is removed and the agent code simply runs again.
    """
    retried = run_actions.reopen_failed(run_id, by, clock.now())
    by_queue: dict[str | None, list[int]] = {}
    for step_id, name in retried.children:
        by_queue.setdefault(queue_of(name), []).append(step_id)
    send = dispatcher()
    for queue, step_ids in by_queue.items():
        send.fan_out(run_id, retried.position, step_ids, queue=queue)
    send.advance(run_id)
    return retried.step
