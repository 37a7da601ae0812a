"""Retry a failed run from its failed step: an operator fixed the cause and lets it go on.

Replay returns a recorded failure at its position, so the failed record is taken away
and the run re-executes from there. Every step before it is kept: no side effect that
already happened runs again. A failed fan-out keeps its succeeded children; its failed
ones run again.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import F

from agentflow.engine import sql, store
from agentflow.engine.attempts import queue_of
from agentflow.engine.ports import dispatcher
from agentflow.exceptions import InvalidState, RunNotFound
from agentflow.models import Approval, Event, Run, Step, clock


def retry(run_id: UUID, *, by: str | None = None) -> dict[str, Any] | None:
    """Put a FAILED run back to work at its failed position; return what was retried.

    The run's error names the position it failed at. A failed step there is removed (a
    failed fan-out has its failed children reset instead); when the step there did not
    fail (the agent raised by itself, diverged, or returned a value that cannot be
    stored), nothing is removed and the agent code simply runs again.
    """
    now = clock.now()
    with sql.atomic():
        run = Run.objects.select_for_update().filter(id=run_id).first()
        if run is None:
            raise RunNotFound(f"There is no run {run_id}.")
        if run.status != Run.Status.FAILED:
            raise InvalidState(
                f"Run {run_id} is {run.status}, not failed; only a failed run can be retried "
                "(a paused one is resumed). Fork it to run it again from a step."
            )
        error = run.error or {}
        position = error.get("position")
        step = None
        if isinstance(position, int) and position >= 0:
            step = Step.objects.filter(run_id=run_id, position=position, index=None).first()
        retried = None
        children: list[tuple[int, str]] = []
        if step is not None and step.status == Step.Status.FAILED:
            retried = {"position": step.position, "kind": step.kind, "name": step.name}
            if step.kind in Step.FAN_OUTS:
                children = _reopen_fan_out(run_id, step, now)
                retried["children"] = len(children)
            else:
                # The decision stays on record; replay asks a person again.
                Approval.objects.filter(step__run_id=run_id, step__position=step.position).update(
                    step=None
                )
                # A call routed to its tool's queue ran as one child: it goes with the call.
                Step.objects.filter(run_id=run_id, position=step.position).delete()
        Run.objects.filter(id=run_id).update(
            status=Run.Status.WAITING,
            error=None,
            output=None,
            finished_at=None,
            wait_reason="",
            wake_at=now,
            wake_seq=F("wake_seq") + 1,
            nudged_at=None,
        )
        store.append_event(
            run_id, Event.Type.RUN_RESUMED, {"by": by, "retried": retried, "previous_error": error}
        )
        by_queue: dict[str | None, list[int]] = {}
        for step_id, name in children:
            by_queue.setdefault(queue_of(name), []).append(step_id)
        for queue, step_ids in by_queue.items():
            dispatcher().fan_out(run_id, step.position, step_ids, queue=queue)
        dispatcher().advance(run_id)
    return retried


def _reopen_fan_out(run_id: UUID, parent: Step, now: Any) -> list[tuple[int, str]]:
    """Reset the failed children that ran, and reopen the parent; return (id, tool) of each.

    A child refused before it ran (a policy denial, arguments its tool refused, a rejected
    approval) has no attempt and stays failed: running it now would skip that gate.
    """
    failed = Step.objects.filter(
        run_id=run_id,
        position=parent.position,
        index__isnull=False,
        status=Step.Status.FAILED,
    )
    reset = list(failed.filter(attempts__gt=0).order_by("index").values_list("id", "name"))
    ids = [step_id for step_id, _ in reset]
    if not ids:
        raise InvalidState(
            f"Run {run_id} failed at the {parent.kind} at position {parent.position}, whose "
            "failed calls were refused before they ran (a policy, their arguments or a "
            "rejected approval); retrying would refuse them again. Fork the run at "
            f"{parent.position} (agentflow.fork(run, at={parent.position})) to ask again."
        )
    Step.objects.filter(id__in=ids).update(
        status=Step.Status.PENDING,
        output=None,
        sealed_output=None,
        error=None,
        attempts=0,
        started_at=None,
        finished_at=None,
        wake_at=None,
        heartbeat_at=None,
        rate_slot=None,
        dispatched_at=now,
    )
    Step.objects.filter(id=parent.id).update(
        status=Step.Status.WAITING, finished_at=None, error=None
    )
    return reset
