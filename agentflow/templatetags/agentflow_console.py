"""Template helpers of the console; every value they return is escaped by the template."""

from __future__ import annotations

from typing import Any

from django import template

from agentflow.console import timeline

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON text (plain ``str``, so autoescape still applies)."""
    return timeline.pretty(value)


@register.filter
def status_class(status: Any) -> str:
    """The badge class of a run, step or approval status."""
    return f"af-status af-status--{str(status or 'none').lower()}"
