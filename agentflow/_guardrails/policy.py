"""Policy rows as the runtime reads them: is a tool allowed, does it need a person, may
the run take another step?

Rows are cached per process for POLICY_CACHE_SECONDS (saves and deletes in this process
clear the cache at once), so the hot path costs a scan of a short in-memory list. Reading
them may raise the database's error; the engine decides what a failed read means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agentflow import conf
from agentflow._guardrails.limit_hit import MAX_DURATION, MAX_STEPS, POLICY, LimitHit
from agentflow.models import clock, conditions
from agentflow.models.matching import matches

if TYPE_CHECKING:
    from agentflow.models import Policy

_cache: dict[str, Any] = {"at": float("-inf"), "rows": []}


def enabled_policies() -> list[Policy]:
    """Enabled Policy rows, re-read at most every POLICY_CACHE_SECONDS."""
    from agentflow.models import Policy

    now = time.monotonic()
    if now - _cache["at"] > conf.setting("POLICY_CACHE_SECONDS"):
        _cache["rows"] = list(Policy.objects.filter(enabled=True).order_by("id"))
        _cache["at"] = now
    return _cache["rows"]


@conf.on_reload
def clear_cache(**kwargs: Any) -> None:
    """Forget cached policies (on Policy saves and deletes in this process, and settings)."""
    _cache["at"] = float("-inf")


def _applies(policy: Policy, agent: str, owner_id: int | None) -> bool:
    return matches(policy.agent, agent) and (policy.owner_id is None or policy.owner_id == owner_id)


def tool_policies(tool: str, agent: str, owner_id: int | None) -> list[Policy]:
    """Enabled rows whose tool, agent and owner scope cover this call."""
    return [p for p in enabled_policies() if matches(p.tool, tool) and _applies(p, agent, owner_id)]


@dataclass(frozen=True)
class Verdict:
    """What the policy says about one call: a denial, or a reason to ask a person first."""

    denied: str | None = None
    approval: str | None = None


def check_tool(
    tool: Any, agent: str, owner_id: int | None, args: dict[str, Any], where: str
) -> Verdict:
    """Apply allow/deny and approval rules to a call (deny wins; optional deny-by-default).

    A rule whose condition cannot be evaluated (``evaluate`` says None) takes the safe
    side: a deny rule denies, an approval rule asks a person, an allow rule allows nothing.
    """
    rows = [
        (p, conditions.evaluate(p.condition, args))
        for p in tool_policies(tool.name, agent, owner_id)
        if p.effect
    ]
    deny = next(((p, t) for p, t in rows if p.effect == p.Effect.DENY and t is not False), None)
    if deny is not None:
        policy, truth = deny
        return Verdict(
            denied=f"Policy '{policy.name}' denies tool '{tool.name}' for agent '{agent}' at "
            f"{where}{_because(policy, truth)}. The tool did not run; change the policy in the "
            "admin if the agent should be allowed to call it."
        )
    allowed = any(p.effect == p.Effect.ALLOW and t is True for p, t in rows)
    if conf.setting("DENY_BY_DEFAULT") and not allowed:
        return Verdict(
            denied=f"Tool '{tool.name}' is not allowed for agent '{agent}' at {where}: "
            "AGENTFLOW['DENY_BY_DEFAULT'] is on and no enabled Policy allows it (an allow rule "
            "counts only when its condition holds). The tool did not run; add an allow Policy "
            "in the admin."
        )
    if tool.requires_approval:
        return Verdict(approval=f"tool '{tool.name}' is declared with requires_approval=True")
    rule = next(((p, t) for p, t in rows if p.effect == p.Effect.APPROVE and t is not False), None)
    if rule is not None:
        policy, truth = rule
        return Verdict(
            approval=f"Policy '{policy.name}' requires approval{_because(policy, truth)}"
        )
    return Verdict()


def _because(policy: Policy, truth: bool | None) -> str:
    if not policy.condition:
        return ""
    if truth is None:
        return (
            f" (condition: {policy.condition}, which cannot be evaluated on these arguments: "
            "a missing argument, NaN or infinity, or values that do not compare; a guardrail "
            "that cannot decide takes the safe side)"
        )
    return f" (condition: {policy.condition})"


def run_guard(run: Any, position: int, now: datetime | None = None) -> LimitHit | None:
    """The policy that stops the run before the step at ``position`` (loop guard, duration)."""
    rows = [p for p in enabled_policies() if p.max_steps is not None or p.max_duration]
    if not rows:
        return None
    for policy in rows:
        if not _applies(policy, run.agent, run.owner_id):
            continue
        if policy.max_steps is not None and position >= policy.max_steps:
            reason = (
                f"Policy '{policy.name}' allows at most {policy.max_steps} steps per run "
                f"(loop guard); run {run.id} reached it at position {position}. Raise "
                "max_steps or disable the policy, then resume the run."
            )
            return LimitHit(POLICY, policy.id, MAX_STEPS, reason, position=position)
        started = run.started_at
        now = now or clock.now()
        if policy.max_duration and started and now - started > policy.max_duration:
            reason = (
                f"Policy '{policy.name}' allows runs of {policy.max_duration} at most; run "
                f"{run.id} started at {started.isoformat()} and is past it at position "
                f"{position}. Raise max_duration or disable the policy, then resume the run."
            )
            return LimitHit(POLICY, policy.id, MAX_DURATION, reason, position=position)
    return None
