"""Approvals: a run waits for a person without holding a worker.

``ctx.approve`` and tool calls that need approval record their step as WAITING next to an
``Approval`` row and suspend. A decision (``decide``) is written once, under a row lock,
and wakes the run (or, for a fan-out child, releases or refuses that child). The
reconciler expires approvals past their timeout with their default decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from pydantic import BaseModel

from agentflow import registry
from agentflow.engine import fanout, store
from agentflow.engine.durations import check_seconds
from agentflow.engine.interrupts import Suspend
from agentflow.engine.ports import dispatcher
from agentflow.engine.serialize import args_hash, check_text, dumps, error_record, loads
from agentflow.exceptions import AlreadyDecided, ApprovalNotFound, InvalidInput, PolicyDenied
from agentflow.gates import validation
from agentflow.gates.redaction import redact, redact_text
from agentflow.gates.sealing import protect, reveal
from agentflow.models import Approval, Run, Step

if TYPE_CHECKING:
    from agentflow.engine.context import RunContext
    from agentflow.engine.tool_call import ToolCall

BATCH = 500


@dataclass(frozen=True)
class Decision:
    """What a person (or a timeout) decided; ``ctx.approve`` returns it."""

    approved: bool
    data: Any
    comment: str
    by: str | None
    status: str

    @classmethod
    def from_output(cls, output: dict[str, Any], model: type[BaseModel] | None) -> Decision:
        data = output.get("data")
        if model is not None and isinstance(data, dict):
            data = model.model_validate(data)
        return cls(
            approved=bool(output["approved"]),
            data=data,
            comment=output.get("comment", ""),
            by=output.get("by"),
            status=output["status"],
        )


def is_approved(approval: Approval) -> bool:
    """Approved by a person, or expired with 'approve' as its default."""
    return approval.status == Approval.Status.APPROVED or (
        approval.status == Approval.Status.EXPIRED and approval.default == "approve"
    )


def binding(tool: str, args_json: str) -> str:
    """The hash an approval of a tool call is bound to: the tool and its exact arguments."""
    return args_hash(f"{tool}\0{args_json}")


def _who(approval: Approval) -> str:
    if approval.status == Approval.Status.EXPIRED:
        return "its timeout"
    user = approval.decided_by
    return user.get_username() if user is not None else "a deleted user"


# -- ctx.approve ---------------------------------------------------------------------


def ask(
    ctx: RunContext,
    title: str,
    data: Any,
    schema: Any,
    timeout: float | None,
    default: str,
) -> Decision:
    """``ctx.approve``: record the question, wait for the answer, return the Decision."""
    model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else None
    json_schema = model.model_json_schema() if model is not None else schema
    where = f"run {ctx.run.id} position {ctx.position}"
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
    position, digest, record = ctx._take("approval", title, args_json)
    if record is not None and record.status == Step.Status.SUCCEEDED:
        return Decision.from_output(record.output, model)
    if record is None:
        now = timezone.now()
        expires = None if timeout is None else now + timedelta(seconds=timeout)
        with store.unavailable_as_interrupt(), transaction.atomic():
            step_id, _ = ctx._record(
                position,
                "approval",
                title,
                args_json,
                digest,
                status=Step.Status.WAITING,
                started_at=now,
                wake_at=expires,
                event=ctx._event("approval.requested", position, "approval", title),
            )
            Approval.objects.create(
                run_id=ctx.run.id,
                step_id=step_id,
                position=position,
                title=redact_text(title),
                request={"data": redact(loads(dumps(data, what="approval data")))},
                schema=json_schema,
                default=default,
                expires_at=expires,
            )
        raise Suspend(_waiting(title, position, expires), expires)
    approval = Approval.objects.select_related("decided_by").get(step_id=record.id)
    if approval.status == Approval.Status.PENDING:
        if approval.expires_at is None or approval.expires_at > timezone.now():
            raise Suspend(_waiting(title, position, approval.expires_at), approval.expires_at)
        approval = expire(approval.id) or Approval.objects.get(id=approval.id)
    output_json = dumps(
        _decision_output(approval, data), what=f"decision of approval '{title}'", sort_keys=True
    )
    output = store.update_step(
        ctx._fence,
        record.id,
        status=Step.Status.SUCCEEDED,
        output_json=output_json,
        finished_at=timezone.now(),
        wake_at=record.wake_at,
        event=ctx._event("step.completed", position, "approval", title, status=approval.status),
    )
    return Decision.from_output(output, model)


def _waiting(title: str, position: int, expires: datetime | None) -> str:
    until = f" until {expires.isoformat()}" if expires else ""
    return f"waiting for approval '{title}'{until} (position {position})"


def _decision_output(approval: Approval, requested: Any) -> dict[str, Any]:
    data = reveal(approval.data, approval.sealed_data)
    return {
        "status": approval.status,
        "approved": is_approved(approval),
        "data": requested if data is None else data,
        "comment": approval.comment,
        "by": None if approval.decided_by_id is None else _who(approval),
    }


# -- tool calls that need approval ---------------------------------------------------


def tool_gate(call: ToolCall, reason: str) -> dict[str, Any]:
    """The arguments an approved call runs with; else suspend, or refuse with PolicyDenied."""
    record = call.record
    approval = None
    if record is not None:
        approval = Approval.objects.select_related("decided_by").filter(step_id=record.id).first()
    if approval is None:
        _request_tool(call, reason)
    assert approval is not None
    if approval.status == Approval.Status.PENDING:
        raise Suspend(_waiting(approval.title, call.position, None))
    if not is_approved(approval):
        comment = f" ({approval.comment})" if approval.comment else ""
        denied = PolicyDenied(
            f"Tool '{call.tool.name}' was not approved at {call.where}: approval "
            f"{approval.id} was {approval.status} by {_who(approval)}{comment}. "
            "The tool did not run."
        )
        call._finish_new(Step.Status.FAILED, error=error_record(denied))
        raise denied
    if approval.binding != binding(call.tool.name, call.args_json):
        denied = PolicyDenied(
            f"Approval {approval.id} at {call.where} was given for other arguments of tool "
            f"'{call.tool.name}' than the agent now passes; the tool did not run."
        )
        call._finish_new(Step.Status.FAILED, error=error_record(denied))
        raise denied
    edited = reveal(approval.data, approval.sealed_data)
    return call.args if edited is None else edited


def _request_tool(call: ToolCall, reason: str) -> None:
    ctx, now = call.ctx, timezone.now()
    event = call._event("approval.requested", reason=reason)
    with store.unavailable_as_interrupt(), transaction.atomic():
        step_id = call.enter(Step.Status.WAITING, event, now, attempts=None)
        Approval.objects.create(
            run_id=ctx.run.id,
            step_id=step_id,
            position=call.position,
            title=redact_text(f"Run tool {call.tool.name}"),
            request=_tool_request(call.tool, call.args, reason),
            schema=call.tool.json_schema,
            tool=call.tool.name,
            binding=binding(call.tool.name, call.args_json),
        )
    raise Suspend(
        f"waiting for approval to run tool {call.tool.name} (position {call.position}): {reason}"
    )


def _tool_request(tool: Any, args: dict[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
    return {"tool": tool.name, "args": redact(args), "reason": reason, **extra}


def request_for_children(
    run_id: UUID, position: int, waiting: list[tuple[int, int, fanout.Child]]
) -> None:
    """Create one approval per fan-out child that needs one (their steps wait for it)."""
    rows = []
    for step_id, index, child in waiting:
        tool = registry.get_tool(child.tool)
        rows.append(
            Approval(
                run_id=run_id,
                step_id=step_id,
                position=position,
                index=index,
                title=redact_text(
                    f"Run tool {tool.name} (call {index} of the fan-out at position {position})"
                ),
                request=_tool_request(tool, json.loads(child.args_json), child.approval or ""),
                schema=tool.json_schema,
                tool=tool.name,
                binding=binding(tool.name, child.args_json),
            )
        )
    Approval.objects.bulk_create(rows)


# -- decisions -----------------------------------------------------------------------


def check_data(approval: Approval, data: Any) -> Any:
    """Validate a reviewer's data: tool arguments against the tool, else the schema."""
    if data is None:
        return None
    where = f"approval {approval.id} ('{approval.title}') of run {approval.run_id}"
    if approval.tool:
        if not isinstance(data, dict):
            raise InvalidInput(f"Edited arguments for {where} must be an object of arguments.")
        try:
            registry.get_tool(approval.tool).validate(data)
        except ValueError as exc:
            raise InvalidInput(
                f"The edited arguments for {where} are invalid: {exc}. Nothing was decided."
            ) from None
        return data
    if approval.schema is not None:
        errors = validation.schema_errors(approval.schema, data)
        if errors:
            raise InvalidInput(
                f"The data for {where} does not match its schema: {'; '.join(errors)}. "
                "Nothing was decided."
            )
    return data


def decide(
    approval_id: int,
    *,
    outcome: str,
    by: Any = None,
    data: Any = None,
    comment: str = "",
) -> Approval:
    """Record the decision once and wake what waits on it; ``AlreadyDecided`` otherwise."""
    approval = Approval.objects.filter(id=approval_id).first()
    if approval is None:
        raise ApprovalNotFound(f"There is no approval {approval_id}.")
    data = data if outcome == Approval.Status.APPROVED else None
    where = f"approval {approval.id} ('{approval.title}')"
    # Encoded before it is validated: a schema check recurses as deep as the data goes.
    data_json = None if data is None else dumps(data, what=f"data for {where}", sort_keys=True)
    check_text(comment or "", what=f"comment on {where}")
    data = check_data(approval, data)
    stored, sealed = protect(data_json)
    now = timezone.now()
    with transaction.atomic():
        approval = Approval.objects.select_for_update().get(id=approval_id)
        if approval.status != Approval.Status.PENDING:
            decided = approval.decided_at.isoformat() if approval.decided_at else "earlier"
            raise AlreadyDecided(
                f"Approval {approval.id} ('{approval.title}') of run {approval.run_id} was "
                f"already {approval.status} by {_who(approval)} at {decided}; a decision is "
                "recorded once."
            )
        approval.status = outcome
        approval.data = loads(stored)
        approval.sealed_data = sealed
        approval.decided_by = by
        approval.decided_at = now
        approval.comment = redact_text(comment or "")
        approval.save(
            update_fields=["status", "data", "sealed_data", "decided_by", "decided_at", "comment"]
        )
        store.append_event(
            approval.run_id,
            "approval.decided",
            {
                "approval": approval.id,
                "position": approval.position,
                "index": approval.index,
                "status": outcome,
                "approved": is_approved(approval),
                "by": None if by is None else by.get_username(),
                "comment": approval.comment,
                "data": approval.data,
            },
        )
        if approval.index is None:
            _wake(approval.run_id, now)
        else:
            _release_child(approval, data_json, now)
    return approval


def _wake(run_id: UUID, now: datetime) -> None:
    woken = Run.objects.filter(id=run_id, status__in=Run.ACTIVE).update(
        wake_seq=F("wake_seq") + 1, wake_at=now
    )
    if woken:
        dispatcher().advance(run_id)


def _release_child(approval: Approval, data_json: str | None, now: datetime) -> None:
    """An approved child becomes runnable (with edited arguments); a refused one fails."""
    step_id = approval.step_id
    if is_approved(approval):
        fields: dict[str, Any] = {"status": Step.Status.PENDING, "dispatched_at": now}
        if data_json is not None:
            stored, sealed = protect(data_json)
            fields.update(args=loads(stored), sealed_args=sealed)
        if Step.objects.filter(id=step_id, status=Step.Status.WAITING).update(**fields):
            dispatcher().run_child(step_id)
        return
    denied = PolicyDenied(
        f"Tool '{approval.tool}' was not approved at run {approval.run_id} position "
        f"{approval.position} child {approval.index}: approval {approval.id} was "
        f"{approval.status} by {_who(approval)}. The tool did not run."
    )
    Step.objects.filter(id=step_id, status=Step.Status.WAITING).update(
        status=Step.Status.FAILED, error=redact(error_record(denied)), finished_at=now
    )
    if not fanout.any_open(approval.run_id, approval.position):
        fanout.join(approval.run_id, approval.position)


def expire(approval_id: int) -> Approval | None:
    """Apply the default decision of an approval past its timeout (None if decided)."""
    approval = Approval.objects.filter(id=approval_id).first()
    if approval is None:
        return None
    try:
        return decide(
            approval_id,
            outcome=Approval.Status.EXPIRED,
            comment=f"no decision before the timeout; the default '{approval.default}' applies",
        )
    except AlreadyDecided:
        return None


def expire_due(now: datetime) -> int:
    """Expire every pending approval whose time is up; return how many."""
    due = Approval.objects.filter(status=Approval.Status.PENDING, expires_at__lte=now).values_list(
        "id", flat=True
    )[:BATCH]
    return sum(expire(approval_id) is not None for approval_id in due)
