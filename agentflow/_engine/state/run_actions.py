"""What operators and the API do to a run: resume, cancel, signal, retry, fork and prune.

Each is one short transaction that checks the run's status under its row lock (or in a
conditional update), writes the run's event, and refuses with ``RunNotFound`` or
``InvalidState`` without changing anything when the run is not in a state it applies to.
The caller sends what the change makes runnable once it returns (committed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import F, QuerySet

from agentflow._engine.serialize import loads
from agentflow._engine.state import child_rows, sql, step_rows
from agentflow._engine.state.outbox import append_event
from agentflow._guardrails.redaction import redact_text
from agentflow._guardrails.sealing import protect
from agentflow.exceptions import InvalidState, RunNotFound
from agentflow.models import Approval, Budget, Event, Run, Signal, Step, clock


def resume(run_id: UUID, by: str | None, now: datetime) -> list[tuple[int, Any, str]]:
    """paused -> waiting, woken, with ``run.resumed``; return its children to send again.

    The children (id, wake_at, tool) are those still claimable, marked dispatched now.
    ``RunNotFound`` or ``InvalidState`` (nothing changed) unless the run is paused.
    """
    with sql.atomic():
        resumed = Run.objects.filter(id=run_id, status=Run.Status.PAUSED).update(
            status=Run.Status.WAITING,
            wait_reason="",
            wake_at=now,
            wake_seq=F("wake_seq") + 1,
            nudged_at=None,
        )
        if not resumed:
            current = Run.objects.filter(id=run_id).values_list("status", flat=True).first()
            if current is None:
                raise RunNotFound(f"There is no run {run_id}.")
            raise InvalidState(
                f"Run {run_id} is {current}, not paused; only a paused run can be resumed."
            )
        append_event(run_id, Event.Type.RUN_RESUMED, {"by": by})
        return child_rows.claimable_children(run_id, now)


def cancel(run_id: UUID, who: str | None, now: datetime) -> bool:
    """Cancel a run that has not finished, with ``run.cancelled``; False if it had.

    Its open steps fail and its pending approvals expire in the same transaction, so a
    worker mid-step stops at its next fenced write and no reviewer decides for nothing.
    """
    by = who or "the system"
    with sql.atomic():
        cancelled = Run.objects.filter(
            id=run_id, status__in=(*Run.ACTIVE, Run.Status.PAUSED)
        ).update(
            status=Run.Status.CANCELLED,
            finished_at=now,
            lease_expires_at=None,
            lease_owner="",
            wait_reason="",
            wake_at=None,
        )
        if not cancelled:
            return False
        Step.objects.filter(run_id=run_id, status__in=Step.OPEN).update(
            status=Step.Status.FAILED,
            finished_at=now,
            error={"type": "cancelled", "message": f"run cancelled by {by}"},
        )
        Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).update(
            status=Approval.Status.EXPIRED, decided_at=now, comment=f"the run was cancelled by {by}"
        )
        append_event(run_id, Event.Type.RUN_CANCELLED, {"by": who})
    return True


def receive_signal(run_id: UUID, name: str, data_json: str) -> None:
    """Store a signal for a run that has not finished and wake it, with ``signal.received``.

    ``RunNotFound`` or ``InvalidState`` (nothing stored) otherwise. The run row is locked
    first, so a signal and the run's finish cannot cross.
    """
    stored, sealed = protect(data_json)
    with sql.atomic():
        current = Run.objects.select_for_update().filter(id=run_id).first()
        if current is None:
            raise RunNotFound(f"There is no run {run_id}.")
        if current.status not in (*Run.ACTIVE, Run.Status.PAUSED):
            raise InvalidState(
                f"Run {run_id} is {current.status}; signals can only reach a run that has "
                "not finished."
            )
        Signal.objects.create(
            run_id=run_id, name=redact_text(name), data=loads(stored), sealed_data=sealed
        )
        Run.objects.filter(id=run_id).update(wake_seq=F("wake_seq") + 1, wake_at=clock.now())
        append_event(run_id, Event.Type.SIGNAL_RECEIVED, {"name": name})


@dataclass(frozen=True)
class Retried:
    """What ``reopen_failed`` put back to work: the step, and a fan-out's children to send."""

    step: dict[str, Any] | None
    position: int | None
    children: list[tuple[int, str]]


def reopen_failed(run_id: UUID, by: str | None, now: datetime) -> Retried:
    """failed -> waiting, woken, from its failed position, with ``run.resumed``.

    The run's error names that position. A failed step there is removed with any child a
    routed call ran as (its approval stays on record, unlinked, so replay asks a person
    again); a failed fan-out keeps its succeeded children and reopens its failed ones.
    Every step before it stays. ``RunNotFound`` or ``InvalidState`` (nothing changed)
    unless the run failed.
    """
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
        retried = Retried(None, None, [])
        if step is not None and step.status == Step.Status.FAILED:
            shown = {"position": step.position, "kind": step.kind, "name": step.name}
            children: list[tuple[int, str]] = []
            if step.kind in Step.FAN_OUTS:
                children = child_rows.reopen_failed_children(
                    run_id, step.id, step.kind, position, now
                )
                shown["children"] = len(children)
            else:
                Approval.objects.filter(step__run_id=run_id, step__position=position).update(
                    step=None
                )
                Step.objects.filter(run_id=run_id, position=position).delete()
            retried = Retried(shown, position, children)
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
        append_event(
            run_id,
            Event.Type.RUN_RESUMED,
            {"by": by, "retried": retried.step, "previous_error": error},
        )
    return retried


def create_fork(source: Run, at: int, by: str | None) -> Run:
    """A new run with ``source``'s input, owner, own budget (nothing spent) and steps before ``at``.

    One transaction, with ``run.created`` and ``run.forked`` on the fork and ``run.forked``
    on the source.
    """
    with sql.atomic():
        forked = Run.objects.create(
            agent=source.agent,
            agent_version=source.agent_version,
            input=source.input,
            sealed_input=source.sealed_input,
            owner_id=source.owner_id,
            parent=source,
        )
        own = source.budgets.filter(period=Budget.Period.RUN).first()
        if own is not None:  # the same limits, with nothing spent yet
            own.pk, own.run, own.name = None, forked, f"run {forked.id}"
            own.save()
        step_rows.copy_steps(source.id, forked.id, at)
        append_event(
            forked.id,
            Event.Type.RUN_CREATED,
            {"agent": forked.agent, "version": forked.agent_version},
        )
        append_event(forked.id, Event.Type.RUN_FORKED, {"from": str(source.id), "at": at, "by": by})
        append_event(source.id, Event.Type.RUN_FORKED, {"to": str(forked.id), "at": at, "by": by})
    return forked


def delete_whole(still_prunable: QuerySet[Run], picked: list[UUID]) -> dict[str, int]:
    """Delete the picked runs that are ``still_prunable``, each with everything it recorded.

    One short transaction. The pick is checked again under a lock on its run rows, so a
    run retried or forked since is kept with what it recorded; a retry that comes after
    waits for the lock, then finds no run. Rows go children first, so a stop half-way
    leaves whole runs. Returns how many runs, steps, events and approvals went.
    """
    with sql.atomic():
        ids = list(
            still_prunable.filter(id__in=picked)
            .order_by("id")  # one lock order for concurrent prunes
            .select_for_update()
            .values_list("id", flat=True)
        )
        deleted = {
            "approvals": _delete(Approval.objects.filter(run_id__in=ids)),
            "events": _delete(Event.objects.filter(run_id__in=ids)),
        }
        _delete(Signal.objects.filter(run_id__in=ids))
        deleted["steps"] = _delete(Step.objects.filter(run_id__in=ids))
        Budget.objects.filter(run_id__in=ids).delete()  # a run's own budget and its spend
        deleted["runs"] = _delete(Run.objects.filter(id__in=ids))
    return deleted


def _delete(rows: QuerySet) -> int:
    return rows.delete()[1].get(rows.model._meta.label, 0)
