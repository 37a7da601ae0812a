"""Approvals: a run waits for a person without holding a worker.

``ctx.approve`` and tool calls that need approval record their step as WAITING next to an
``Approval`` row and suspend. A decision (``decide``) is written once, under a row lock,
and wakes the run (or, for a fan-out child, releases or refuses that child). The
reconciler expires approvals past their timeout with their default decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from agentflow import _registry as registry
from agentflow._engine import fan_out_record, titles
from agentflow._engine.attempts import queue_of
from agentflow._engine.ports import dispatcher
from agentflow._engine.redacted_edits import keep_real
from agentflow._engine.serialize import args_hash, check_text, dumps, error_record, loads
from agentflow._engine.state import child_rows, outbox, run_rows, sql
from agentflow._guardrails.redaction import redact, redact_text
from agentflow._guardrails.sealing import protect, reveal, unseal
from agentflow.exceptions import AlreadyDecided, ApprovalNotFound, InvalidInput, PolicyDenied
from agentflow.models import Approval, Event, clock, validation

BATCH = 500
# The longest comment a decision takes. It is kept in the decision's event and step output,
# which must fit in AGENTFLOW["MAX_PAYLOAD_BYTES"] with the data.
MAX_COMMENT_CHARS = 10_000


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


def who(approval: Approval) -> str:
    if approval.status == Approval.Status.EXPIRED:
        return "its timeout"
    user = approval.decided_by
    return user.get_username() if user is not None else "a deleted user"


def waiting_reason(title: str, position: int, expires: datetime | None) -> str:
    until = f" until {expires.isoformat()}" if expires else ""
    return f"waiting for approval '{title}'{until} (position {position})"


def decision_output(approval: Approval, requested: Any) -> dict[str, Any]:
    data = reveal(approval.data, approval.sealed_data)
    return {
        "status": approval.status,
        "approved": is_approved(approval),
        "data": requested if data is None else data,
        "comment": approval.comment,
        "by": None if approval.decided_by_id is None else who(approval),
    }


def stored_decision(approval: Approval, decision: dict[str, Any]) -> dict[str, Any]:
    """``decision`` as stored, from what was redacted when it was recorded.

    The comment and the reviewer's data were redacted when the decision was recorded, and
    the agent's data when the approval was asked for; only the status and the reviewer's
    name are redacted here. A long comment is not scanned again as the step completes.
    """
    if approval.data is not None:
        data = approval.data
    elif "data" in approval.request:
        data = approval.request["data"]
    else:  # not kept with the approval: redacted now
        data = redact(decision["data"])
    return {
        **redact({"status": decision["status"], "by": decision["by"]}),
        "approved": decision["approved"],
        "data": data,
        "comment": approval.comment,
    }


def tool_request(tool: Any, args: dict[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
    return {"tool": tool.name, "args": redact(args), "reason": reason, **extra}


def call_title(tool: Any, shown_args: Any) -> str:
    """The title of an approval of one call, from the redacted arguments the reviewer sees.

    A tool's own ``approval_title`` is used when it fills; redaction runs again over the
    whole title, in case a secret's pattern spans the joined values.
    """
    make = getattr(tool, "approval_title_for", None)
    title = make(shown_args) if make else titles.default_title(tool.name, shown_args)
    return redact_text(title)


def requested_data(approval: Approval) -> Any:
    """What the reviewer is shown to edit: a tool call's arguments, or the agent's data."""
    request = approval.request if isinstance(approval.request, dict) else {}
    return request.get("args") if approval.tool else request.get("data")


def sealed_request(args_json: str) -> str | None:
    """The real arguments or data, sealed, when redaction changed what the reviewer sees."""
    return protect(args_json)[1]


def request_for_call(
    run_id: UUID,
    step_id: int,
    position: int,
    tool: Any,
    args: dict[str, Any],
    args_json: str,
    reason: str,
) -> Approval:
    """Create the approval a ``ctx.call`` waits for, bound to the tool and its arguments."""
    request = tool_request(tool, args, reason)
    return Approval.objects.create(
        run_id=run_id,
        step_id=step_id,
        position=position,
        title=call_title(tool, request["args"]),
        request=request,
        sealed_request=sealed_request(args_json),
        schema=tool.json_schema,
        tool=tool.name,
        binding=binding(tool.name, args_json),
    )


def request_for_children(
    run_id: UUID, position: int, waiting: list[tuple[int, int, fan_out_record.Child]]
) -> None:
    """Create one approval per fan-out child that needs one (their steps wait for it)."""
    rows = []
    for step_id, index, child in waiting:
        tool = child.tool
        request = tool_request(tool, json.loads(child.args_json), child.approval or "")
        rows.append(
            Approval(
                run_id=run_id,
                step_id=step_id,
                position=position,
                index=index,
                title=titles.child_title(call_title(tool, request["args"]), index, position),
                request=request,
                sealed_request=sealed_request(child.args_json),
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
    """Record the decision once and wake what waits on it; ``AlreadyDecided`` otherwise.

    ``InvalidInput`` (nothing decided) for data that fails the schema or a comment over
    MAX_COMMENT_CHARS.
    """
    approval = Approval.objects.filter(id=approval_id).first()
    if approval is None:
        raise ApprovalNotFound(f"There is no approval {approval_id}.")
    data = data if outcome == Approval.Status.APPROVED else None
    where = f"approval {approval.id} ('{approval.title}')"
    if data is not None and approval.sealed_request:
        real = loads(unseal(approval.sealed_request))
        data = keep_real(data, requested_data(approval), real, where)
    # Encoded before it is validated: a schema check recurses as deep as the data goes.
    data_json = None if data is None else dumps(data, what=f"data for {where}", sort_keys=True)
    check_text(comment or "", what=f"comment on {where}")
    if len(comment or "") > MAX_COMMENT_CHARS:
        raise InvalidInput(
            f"The comment on {where} of run {approval.run_id} is {len(comment):,} characters "
            f"long, over the limit of {MAX_COMMENT_CHARS:,}. Shorten it (keep long notes "
            "elsewhere and link them). Nothing was decided."
        )
    data = check_data(approval, data)
    stored, sealed = protect(data_json)
    now = clock.now()
    with sql.atomic():
        approval = Approval.objects.select_for_update().get(id=approval_id)
        if approval.status != Approval.Status.PENDING:
            decided = approval.decided_at.isoformat() if approval.decided_at else "earlier"
            raise AlreadyDecided(
                f"Approval {approval.id} ('{approval.title}') of run {approval.run_id} was "
                f"already {approval.status} by {who(approval)} at {decided}; a decision is "
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
        outbox.append_event(
            approval.run_id,
            Event.Type.APPROVAL_DECIDED,
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
            if run_rows.wake(approval.run_id, now):
                dispatcher().advance(approval.run_id)
        else:
            _release_child(approval, data_json, now)
    return approval


def _release_child(approval: Approval, data_json: str | None, now: datetime) -> None:
    """An approved child becomes runnable (with edited arguments); a refused one fails."""
    step_id = approval.step_id
    if is_approved(approval):
        if child_rows.release_approved(step_id, now, data_json):
            dispatcher().run_child(step_id, queue=queue_of(approval.tool))
        return
    denied = PolicyDenied(
        f"Tool '{approval.tool}' was not approved at run {approval.run_id} position "
        f"{approval.position} child {approval.index}: approval {approval.id} was "
        f"{approval.status} by {who(approval)}. The tool did not run."
    )
    child_rows.fail_waiting(step_id, redact(error_record(denied)), now)
    if not fan_out_record.any_open(approval.run_id, approval.position):
        fan_out_record.join(approval.run_id, approval.position)


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
