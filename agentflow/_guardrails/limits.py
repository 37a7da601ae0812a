"""The limits that apply to one tool call: the tool's own, overridden by Policy rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentflow._definitions import parse_rate
from agentflow._guardrails.policy import tool_policies

if TYPE_CHECKING:
    from agentflow._definitions import ToolDefinition


@dataclass(frozen=True)
class Limits:
    """Effective limits of a call and the key its counters share across the fleet."""

    key: str
    rate: tuple[int, int] | None = None  # (calls, per seconds)
    concurrency: int | None = None

    @property
    def any(self) -> bool:
        return self.rate is not None or self.concurrency is not None


def _specificity(policy: Any) -> tuple[int, int, int]:
    # An owner beats an agent, an agent beats none, an exact tool beats a glob.
    return (
        policy.owner_id is not None,
        bool(policy.agent),
        "*" not in policy.tool and "?" not in policy.tool,
    )


def limits_for(tool: ToolDefinition, agent: str, owner_id: int | None) -> Limits:
    """Apply the most specific matching Policy to the tool's declared limits."""
    rate = parse_rate(tool.rate_limit) if tool.rate_limit else None
    concurrency = tool.max_concurrency
    key = tool.name
    candidates = [
        p for p in tool_policies(tool.name, agent, owner_id) if p.rate_limit or p.max_concurrency
    ]
    if candidates:
        policy = max(candidates, key=_specificity)
        if policy.rate_limit:
            rate = parse_rate(policy.rate_limit)
        if policy.max_concurrency:
            concurrency = policy.max_concurrency
        if policy.per_agent:
            key += f"|agent={agent}"
        if policy.per_owner:
            key += f"|owner={owner_id}"
    return Limits(key=key, rate=rate, concurrency=concurrency)
