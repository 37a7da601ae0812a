"""The demo's scripted model: each example agent's conversation goes to its own script."""

from __future__ import annotations

from typing import Any

from apps.billing import scripted as billing
from apps.research import agents as research_agents
from apps.research import scripted as research


def respond(messages: list[dict[str, Any]], tools: list[str]) -> dict[str, Any]:
    """Answer as the agent whose instructions open the conversation expects."""
    if messages and messages[0].get("content") == research_agents.INSTRUCTIONS:
        return research.brief(messages, tools)
    return billing.explain(messages, tools)
