"""``ctx.approve``: record the question, wait for a person's answer, return the Decision."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from agentflow._engine import decisions
from agentflow._engine.decisions import Decision
from agentflow._engine.durations import check_seconds
from agentflow._engine.interrupts import Suspend, unavailable_as_interrupt
from agentflow._engine.journal import Journal
from agentflow._engine.serialize import dumps, loads
from agentflow._engine.state import sql
from agentflow._guardrails.redaction import redact_text
from agentflow._guardrails.sealing import protect
from agentflow.exceptions import InvalidInput
from agentflow.models import Approval, Event, Step, clock, validation


def approve(
    journal: Journal,
    title: str,
    data: Any,
    schema: Any,
    timeout: float | None,
    default: str,
) -> Decision:
    """Ask a person; the run waits (holding no worker) and gets their ``Decision``."""
    model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    json_schema = model.model_json_schema() if model is not None else schema
    where = f"run {journal.run.id} position {journal.position}"
    if not isinstance(title, str) or not title.strip() or len(title) > 300:
        raise InvalidInput(f"ctx.approve at {where}: title must be 1 to 300 characters")
    if default not in ("approve", "reject"):
        raise InvalidInput(f"ctx.approve at {where}: default must be 'approve' or 'reject'")
    if timeout is not None and not check_seconds(timeout, f"ctx.approve timeout at {where}") > 0:
        raise InvalidInput(f"ctx.approve at {where}: timeout must be a positive number")
    if json_schema is not None:
        try:
            validation.check_schema(json_schema)
        except ValueError as exc:
            raise InvalidInput(f"ctx.approve at {where}: schema is {exc}") from None
    args_json = dumps(
        {
            "title": title,
            "data": data,
            "schema": json_schema,
            "timeout": timeout,
            "default": default,
        },
        what=f"approval request '{title}'",
        sort_keys=True,
    )
    entry = journal.take(Step.Kind.APPROVAL, title, args_json)
    record = entry.record
    if record is not None and record.status == Step.Status.SUCCEEDED:
        return Decision.from_output(journal.replayed(record), model)
    if record is None:
        now = clock.now()
        expires = None if timeout is None else now + timedelta(seconds=timeout)
        shown, sealed = protect(dumps(data, what="approval data"))
        with unavailable_as_interrupt(), sql.atomic():
            step_id, _ = journal.record(
                entry,
                status=Step.Status.WAITING,
                started_at=now,
                wake_at=expires,
                event=entry.event(Event.Type.APPROVAL_REQUESTED),
            )
            Approval.objects.create(
                run_id=journal.run.id,
                step_id=step_id,
                position=entry.position,
                title=redact_text(title),
                request={"data": loads(shown)},
                sealed_request=sealed,
                schema=json_schema,
                default=default,
                expires_at=expires,
            )
        raise Suspend(decisions.waiting_reason(title, entry.position, expires), expires)
    approval = Approval.objects.select_related("decided_by").get(step_id=record.id)
    if approval.status == Approval.Status.PENDING:
        if approval.expires_at is None or approval.expires_at > clock.now():
            reason = decisions.waiting_reason(title, entry.position, approval.expires_at)
            raise Suspend(reason, approval.expires_at)
        approval = decisions.expire(approval.id) or Approval.objects.get(id=approval.id)
    decision = decisions.decision_output(approval, data)
    what = f"decision of approval '{title}'"
    output = journal.update(
        record.id,
        status=Step.Status.SUCCEEDED,
        output_json=dumps(decision, what=what, sort_keys=True),
        # Its comment and data were redacted when they were recorded: not scanned again.
        redacted_json=dumps(
            decisions.stored_decision(approval, decision), what=what, sort_keys=True
        ),
        finished_at=clock.now(),
        event=entry.event(Event.Type.STEP_COMPLETED, status=approval.status),
    )
    return Decision.from_output(output, model)
