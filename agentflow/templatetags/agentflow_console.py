"""Template helpers of the console; every value they return is escaped by the template,
or (trees, times) escaped piece by piece by the module that builds the HTML."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template
from django.utils.safestring import SafeString

from agentflow._console import comparing, durations, timeline, trees
from agentflow._console.errors import ErrorView, error_view

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON text (plain ``str``, so autoescape still applies)."""
    return timeline.pretty(value)


@register.filter
def status_class(status: Any) -> str:
    """The badge class of a run, step or approval status."""
    return f"af-status af-status--{str(status or 'none').lower()}"


@register.filter
def tree(value: Any) -> SafeString:
    """A JSON value as a collapsible tree, bounded (see ``agentflow._console.trees``)."""
    return trees.render(value)


@register.filter
def human_duration(value: Any) -> str:
    """A timedelta or a number of seconds in words: "1.3 ms", "4 min 2 s"."""
    return durations.human(value)


@register.filter
def when(value: datetime | None) -> SafeString | str:
    """``<time>`` saying how long ago (or how soon), with the exact time on hover."""
    return durations.time_tag(value)


@register.filter
def as_error(value: Any) -> ErrorView | None:
    """A stored error as type, message and traceback."""
    return error_view(value)


@register.filter
def elapsed(end: datetime | None, start: datetime | None) -> str:
    """The time from ``start`` to ``end`` in words."""
    return durations.human(end - start) if end and start else "-"


@register.simple_tag
def compare_summary(comparison: Any, show_all: Any = "") -> comparing.Summary:
    """``{% compare_summary comparison request.GET.all as summary %}``: where runs differ."""
    return comparing.summarize(comparison, show_all=bool(show_all))
