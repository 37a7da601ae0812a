"""``ctx.map`` and ``ctx.parallel``: record a fan-out, wait for it, collect its results.

A ``ctx.call`` of a tool on a queue of its own is a one-child fan-out too (``routed_call``):
its child runs on the tool's queue, and the join copies the child's outcome onto the
call's own row, so on replay it reads like any other call.
"""

from __future__ import annotations

from typing import Any

from agentflow._definitions import ToolDefinition
from agentflow._engine import decisions, fan_out_record
from agentflow._engine.errors import rebuild_exception
from agentflow._engine.interrupts import Suspend, unavailable_as_interrupt
from agentflow._engine.journal import Entry, Journal
from agentflow._engine.serialize import calls_hash, dumps, error_record
from agentflow._guardrails import policy
from agentflow.exceptions import PayloadError, PolicyDenied, ToolArgumentError, ToolError
from agentflow.models import Step

Call = tuple[ToolDefinition, dict[str, Any]]


def run(
    journal: Journal, kind: str, name: str, calls: list[Call], return_exceptions: bool
) -> list[Any]:
    """Fan ``calls`` out (a new position) or collect their results (a finished one)."""
    encoded = []
    for index, (tool, kwargs) in enumerate(calls):
        try:
            encoded.append(dumps(kwargs, what=f"arguments of {tool.name}", sort_keys=True))
        except PayloadError as exc:
            raise ToolArgumentError(
                f"{kind} {name} at run {journal.run.id}, call {index}: {exc}", tool=tool.name
            ) from None
    # The parent keeps a summary (the children keep their own arguments), so a fan-out
    # of any size fits; its hash still covers every call, in order.
    summary = {"calls": len(calls), "tools": sorted({tool.name for tool, _ in calls})}
    digest = calls_hash([(tool.name, args) for (tool, _), args in zip(calls, encoded, strict=True)])
    args_json = dumps(summary, what=f"summary of {kind} {name}", sort_keys=True)
    entry = journal.take(kind, name, args_json, digest)
    if entry.record is None:
        _start(journal, entry, calls, encoded)
        raise Suspend(
            f"waiting for {len(calls)} calls of {kind} {name} (position {entry.position})"
        )
    if not entry.finished:
        raise Suspend(f"waiting for the calls of {kind} {name} (position {entry.position})")
    outcomes, failed = [], []
    for index, (status, output, error) in enumerate(
        fan_out_record.results(journal.run.id, entry.position)
    ):
        if status == Step.Status.SUCCEEDED:
            outcomes.append(output)
        else:
            exc = rebuild_exception(Step.Kind.CALL, error or {})
            outcomes.append(exc)
            failed.append(f"[{index}] {exc}")
    if failed and not return_exceptions:
        raise ToolError(
            f"{len(failed)} of {len(outcomes)} calls of {kind} {name} failed at run "
            f"{journal.run.id} position {entry.position}: "
            + "; ".join(failed[:20])
            + (f"; and {len(failed) - 20} more" if len(failed) > 20 else ""),
            tool=name,
        )
    return outcomes


def routed_call(journal: Journal, entry: Entry, tool: ToolDefinition, args: dict[str, Any]) -> Any:
    """A ``ctx.call`` of a tool on its own queue: one child there; the run waits for it."""
    if entry.record is None:
        _start(journal, entry, [(tool, args)], [entry.args_json])
    raise Suspend(
        f"waiting for tool {tool.name} on queue {tool.queue!r} (position {entry.position})"
    )


def _start(journal: Journal, entry: Entry, calls: list[Call], encoded: list[str]) -> None:
    """Pass each call through its gates, then record the parent and children and send them."""
    children = [
        _child(journal, entry.position, index, tool, kwargs, child_json)
        for index, ((tool, kwargs), child_json) in enumerate(zip(calls, encoded, strict=True))
    ]
    with unavailable_as_interrupt():
        waiting = fan_out_record.create(journal, entry, children)
        if waiting:
            decisions.request_for_children(journal.run.id, entry.position, waiting)


def _child(
    journal: Journal,
    position: int,
    index: int,
    tool: ToolDefinition,
    kwargs: dict[str, Any],
    args_json: str,
) -> fan_out_record.Child:
    """Pass a call through policy and its schema before it is recorded as a child."""
    run = journal.run
    where = f"run {run.id} position {position} child {index}"
    with unavailable_as_interrupt("reading policies"):
        verdict = policy.check_tool(tool, run.agent, run.owner_id, kwargs, where)
    if verdict.denied:
        return fan_out_record.Child(tool, args_json, error_record(PolicyDenied(verdict.denied)))
    try:
        tool.validate(kwargs)
    except ValueError as exc:
        refused = ToolArgumentError(
            f"Tool '{tool.name}' got invalid arguments at run {run.id} position "
            f"{position} child {index}: {exc}. The tool did not run.",
            tool=tool.name,
        )
        return fan_out_record.Child(tool, args_json, error_record(refused, tool=tool.name))
    return fan_out_record.Child(tool, args_json, approval=verdict.approval)
