"""Template tags of live console pages (see ``agentflow._console.live``)."""

from __future__ import annotations

from typing import Any

from django import template

from agentflow._console import live
from agentflow.models import Approval, Run

register = template.Library()


@register.simple_tag
def list_live(*refresh_on: str) -> dict[str, Any]:
    """A list page's live data: ``{% list_live "status" as live %}``."""
    return live.list_live(*refresh_on)


@register.simple_tag
def live_names() -> dict[str, Any]:
    """The live scripts' frame names and statuses: ``{% live_names as names %}``."""
    return live.names()


@register.filter
def children_running(rows: list[Any]) -> bool:
    """Whether a fan-out on these timeline rows still has children to run.

    Children write no events; a page showing their counts polls while they run.
    """
    return any(row.counts is not None and row.counts.running for row in rows)


@register.simple_tag
def run_decided(run: Run) -> list[Approval]:
    """The run's most recently decided approvals: ``{% run_decided run as decided %}``."""
    return live.run_decided(run)
