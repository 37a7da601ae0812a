"""The run waterfall: each step a bar on a time axis, waits shaded by what they wait on.

Read in four queries whatever the run's size: the last ``MAX_ROWS`` top-level steps, one
GROUP BY (position, time bucket) over their fan-outs' children, one aggregate of their
approvals, and the run's newest wait events (bounded). A fan-out of
5,000 children is drawn as a band (first start to last finish) over a density strip of
at most ``BUCKETS`` cells, never as one element per child.

The builder returns shapes (positions, sizes, classes, links, titles); the template draws
them as SVG with autoescaping, and the styles live in console-charts.css.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count, FloatField, Func, Max, Min, Q
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from agentflow._console import timeaxis
from agentflow._console.svg import Shape
from agentflow._console.timeline import STEPS_PER_PAGE
from agentflow.models import Approval, Event, Run, Step

MAX_ROWS = 200  # top-level steps drawn; earlier ones are named in a note
BUCKETS = 120  # cells of a fan-out's density strip across the whole axis
MAX_EVENTS = 2000  # the newest wait events read (throttles, retries, pauses)

WIDTH = 1000
LABEL_WIDTH = 230
PLOT_LEFT, PLOT_RIGHT = LABEL_WIDTH + 10, WIDTH - 10
AXIS_HEIGHT = 26
ROW_HEIGHT = 22
FANOUT_HEIGHT = 36
BAR_HEIGHT = 12

# What a wait is shaded by: its cause, and the legend's words for it.
CAUSES = {
    "person": "a person (approval)",
    "timer": "a timer (sleep, retry backoff)",
    "signal": "a signal (wait_for)",
    "rate": "a rate limit",
    "budget": "a pause (budget or limit)",
}
WAIT_EVENTS = (
    Event.Type.STEP_THROTTLED,
    Event.Type.STEP_RETRYING,
    Event.Type.RUN_PAUSED,
    Event.Type.RUN_RESUMED,
    Event.Type.RUN_CANCELLED,
)


class Epoch(Func):
    """Seconds since 1970 of a datetime column, on PostgreSQL and SQLite."""

    output_field = FloatField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler, connection, template="EXTRACT(EPOCH FROM %(expressions)s)::float8", **extra
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s) - 2440587.5) * 86400.0)",
            **extra,
        )


@dataclass
class Row:
    y: float
    height: float
    label: str
    href: str
    title: str
    fanout: bool = False
    bars: list[Shape] = field(default_factory=list)
    waits: list[Shape] = field(default_factory=list)
    cells: list[Shape] = field(default_factory=list)

    @property
    def text_y(self) -> float:
        return self.y + min(self.height, ROW_HEIGHT) / 2 + 4


@dataclass
class Waterfall:
    start: datetime | None = None
    end: datetime | None = None
    rows: list[Row] = field(default_factory=list)
    ticks: list[timeaxis.Tick] = field(default_factory=list)
    pauses: list[Shape] = field(default_factory=list)
    causes: list[tuple[str, str]] = field(default_factory=list)
    hidden: int = 0
    width: int = WIDTH
    height: float = AXIS_HEIGHT
    plot_left: float = PLOT_LEFT
    plot_right: float = PLOT_RIGHT
    axis_y: float = AXIS_HEIGHT - 8
    live: bool = False

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def elements(self) -> int:
        """How many shapes the SVG draws (rows, bars, waits, cells, pauses, ticks)."""
        shapes = sum(len(r.bars) + len(r.waits) + len(r.cells) + 1 for r in self.rows)
        return shapes + len(self.pauses) + len(self.ticks)


def _span(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "not started"
    if end is None:
        return "not finished"
    return timeaxis.human((end - start).total_seconds())


def _steps(run: Run) -> list[dict[str, Any]]:
    rows = Step.objects.filter(run=run, index__isnull=True).order_by("-position")
    columns = (
        "position", "kind", "name", "status", "started_at", "finished_at",
        "dispatched_at", "wake_at", "rate_slot",
    )  # fmt: skip
    return list(reversed(rows.values(*columns)[: MAX_ROWS + 1]))


def _children(
    run: Run, first: int, origin: datetime, width: float
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[int, int]]]:
    """Fan-outs from position ``first`` on, in one GROUP BY (position, start bucket) query.

    Returns per position its counts, first start, last finish and throttled children, and
    per position the children started in each bucket of ``width`` seconds from ``origin``.
    """
    started = Coalesce("started_at", "dispatched_at")
    throttled = Q(status=Step.Status.SCHEDULED, rate_slot__isnull=False)
    bucket = Func(
        (Epoch(started) - origin.timestamp()) / width, function="FLOOR", output_field=FloatField()
    )
    rows = (
        Step.objects.filter(run=run, index__isnull=False, position__gte=first)
        .annotate(bucket=bucket)
        .values("position", "bucket")
        .annotate(
            total=Count("id"),
            done=Count("id", filter=Q(status=Step.Status.SUCCEEDED)),
            failed=Count("id", filter=Q(status=Step.Status.FAILED)),
            open=Count("id", filter=Q(status__in=Step.OPEN)),
            throttled=Count("id", filter=throttled),
            first=Min(started),
            last=Max("finished_at"),
            throttle_from=Min("dispatched_at", filter=throttled),
            throttle_to=Max("wake_at", filter=throttled),
        )
        .order_by()
    )
    totals: dict[int, dict[str, Any]] = {}
    histogram: dict[int, dict[int, int]] = {}
    for r in rows:
        position = r["position"]
        agg = totals.get(position)
        if agg is None:
            totals[position] = agg = {key: r[key] for key in SUMMED + EARLIEST + LATEST}
        else:
            for key in SUMMED:
                agg[key] += r[key]
            for key, pick in [(k, min) for k in EARLIEST] + [(k, max) for k in LATEST]:
                values = [v for v in (agg[key], r[key]) if v is not None]
                agg[key] = pick(values) if values else None
        if r["bucket"] is not None:
            cell = min(max(int(r["bucket"]), 0), BUCKETS - 1)
            counts = histogram.setdefault(position, {})
            counts[cell] = counts.get(cell, 0) + r["total"]
    return totals, histogram


SUMMED = ("total", "done", "failed", "open", "throttled")
EARLIEST = ("first", "throttle_from")
LATEST = ("last", "throttle_to")


def _approvals(run: Run, first: int) -> dict[int, dict[str, Any]]:
    """Per position: when the first approval was asked and the last one decided."""
    rows = (
        Approval.objects.filter(run=run, position__gte=first)
        .values("position")
        .annotate(
            asked=Min("created_at"),
            decided=Max("decided_at"),
            pending=Count("id", filter=Q(status=Approval.Status.PENDING)),
            total=Count("id"),
        )
        .order_by()
    )
    return {r["position"]: r for r in rows}


def _events(run: Run) -> list[dict[str, Any]]:
    rows = Event.objects.filter(run=run, type__in=WAIT_EVENTS).order_by("-seq")
    return list(reversed(rows.values("type", "data", "created_at")[:MAX_EVENTS]))


def _pauses(run: Run, events: list[dict[str, Any]], now: datetime) -> list[tuple[Any, Any]]:
    """[paused, resumed) intervals from run.paused / run.resumed (or cancelled) events."""
    spans, since = [], None
    for event in events:
        if event["type"] == Event.Type.RUN_PAUSED and since is None:
            since = event["created_at"]
        elif (
            event["type"] in (Event.Type.RUN_RESUMED, Event.Type.RUN_CANCELLED)
            and since is not None
        ):
            spans.append((since, event["created_at"]))
            since = None
    if since is not None:
        spans.append((since, run.finished_at or now))
    return spans


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    parsed = parse_datetime(value)
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, UTC)
    return parsed


def _step_waits(
    step: dict[str, Any], events: list[dict[str, Any]], approval: dict[str, Any] | None, now: Any
) -> list[tuple[str, datetime, datetime]]:
    """(cause, from, to) of one top-level step's waits."""
    start = step["started_at"] or step["dispatched_at"]
    end = step["finished_at"] or now
    kind, found = step["kind"], []
    if start is not None and kind == Step.Kind.APPROVAL:
        found.append(("person", start, end))
    elif start is not None and kind == Step.Kind.SLEEP:
        found.append(("timer", start, end))
    elif start is not None and kind == Step.Kind.WAIT:
        found.append(("signal", start, end))
    elif approval is not None and kind not in Step.FAN_OUTS:
        found.append(("person", approval["asked"], approval["decided"] or end))
    for event in events:
        data = event["data"] if isinstance(event["data"], dict) else {}
        if data.get("position") != step["position"]:
            continue
        until = _when(data.get("wake_at"))
        if until is None:
            continue
        cause = "rate" if event["type"] == Event.Type.STEP_THROTTLED else "timer"
        found.append((cause, event["created_at"], min(until, end)))
    if step["status"] == Step.Status.SCHEDULED and step["rate_slot"] and step["wake_at"]:
        # Throttled now: from the last throttle (or its start) until its booked slot.
        since = next((e["created_at"] for e in reversed(events) if _is_throttle_of(e, step)), start)
        if since is not None:
            found.append(("rate", since, max(step["wake_at"], since)))
    return found


def _is_throttle_of(event: dict[str, Any], step: dict[str, Any]) -> bool:
    data = event["data"] if isinstance(event["data"], dict) else {}
    return event["type"] == Event.Type.STEP_THROTTLED and data.get("position") == step["position"]


def _page_link(position: int, on_page: set[int]) -> str:
    if position in on_page:
        return f"#step-{position}"
    return f"?page={position // STEPS_PER_PAGE + 1}#step-{position}"


def build(run: Run, on_page: set[int] | frozenset[int] = frozenset()) -> Waterfall:
    """The waterfall of ``run``; ``on_page`` are the positions the page's timeline shows."""
    now = timezone.now()
    steps = _steps(run)
    hidden = 0
    if len(steps) > MAX_ROWS:  # positions count from 0: the first drawn is how many are not
        steps = steps[1:]
        hidden = steps[0]["position"]
    chart = Waterfall(hidden=hidden, live=run.status not in Run.TERMINAL)
    if not steps:
        return chart
    first = steps[0]["position"]

    # The axis: from the run's (or its first drawn step's) start to its end, or now. The
    # children's buckets are laid on the axis known before their query; a child outside
    # it is counted in the first or last cell.
    starts = [run.started_at or run.created_at]
    ends = [run.finished_at or now]
    for step in steps:
        starts.append(step["started_at"] or step["dispatched_at"])
        ends.append(step["finished_at"])
    origin = min(s for s in starts if s is not None)
    guess = max(max(e for e in ends if e is not None), origin + timedelta(seconds=1))
    bucket_seconds = (guess - origin).total_seconds() / BUCKETS
    children, histogram = _children(run, first, origin, bucket_seconds)
    approvals = _approvals(run, first)
    events = _events(run)
    for agg in children.values():
        starts.append(agg["first"])
        ends.append(agg["last"])
    start = min(s for s in starts if s is not None)
    if not run.finished_at:
        ends.append(now)
    end = max(e for e in ends if e is not None)
    if end <= start:
        end = start + timedelta(seconds=1)
    axis = timeaxis.Axis(start, end, PLOT_LEFT, PLOT_RIGHT)
    chart.start, chart.end, chart.ticks = start, end, axis.ticks()

    used: set[str] = set()
    y = AXIS_HEIGHT

    def wait(cause: str, since: datetime, until: datetime, top: float, height: float) -> Shape:
        used.add(cause)
        x, width = axis.span(since, until)
        title = f"waiting on {CAUSES[cause]}: {_span(since, until)}"
        return Shape(x, top, width, height, f"af-wf-wait af-wf-wait--{cause}", title, cause=cause)

    # The run itself, with its pauses.
    run_row = Row(y, ROW_HEIGHT, f"run · {run.status}", "#af-summary", f"run {run.id}")
    bar_y = y + (ROW_HEIGHT - BAR_HEIGHT) / 2
    x, width = axis.span(run.started_at or run.created_at, run.finished_at or now)
    run_title = f"run {run.status}: {_span(run.started_at or run.created_at, run.finished_at)}"
    run_row.bars.append(
        Shape(x, bar_y, width, BAR_HEIGHT, f"af-wf-bar af-wf--{run.status}", run_title)
    )
    for since, until in _pauses(run, events, now):
        run_row.waits.append(wait("budget", since, until, bar_y - 2, BAR_HEIGHT + 4))
        x, width = axis.span(since, until)
        chart.pauses.append(
            Shape(x, AXIS_HEIGHT, width, 0, "af-wf-pause", "run paused", cause="budget")
        )
    chart.rows.append(run_row)
    y += ROW_HEIGHT

    for step in steps:
        position = step["position"]
        agg = children.get(position)
        height = FANOUT_HEIGHT if agg else ROW_HEIGHT
        label = f"{position} · {step['kind']} {step['name']}"
        start_at = step["started_at"] or step["dispatched_at"]
        title = f"#{position} {step['kind']} {step['name']} ({step['status']}): " + _span(
            start_at, step["finished_at"]
        )
        href = _page_link(position, on_page)
        if agg:
            label = f"{label} ({agg['total']:,} children)"
            href = reverse("admin:agentflow_run_children", args=[run.id, position])
        row = Row(y, height, label, href, title, fanout=bool(agg))
        bar_y = y + (ROW_HEIGHT - BAR_HEIGHT) / 2
        if start_at is not None:
            x, width = axis.span(start_at, step["finished_at"] or now)
            css = f"af-wf-bar af-wf--{step['status']}"
            if agg:
                css += " af-wf-parent"
            row.bars.append(Shape(x, bar_y, width, BAR_HEIGHT, css, title))
        for cause, since, until in _step_waits(step, events, approvals.get(position), now):
            row.waits.append(wait(cause, since, until, bar_y - 2, BAR_HEIGHT + 4))
        if agg:
            cells = histogram.get(position, {})
            grid = (origin, bucket_seconds)
            _fanout(row, agg, cells, grid, approvals.get(position), axis, now)
            for shape in row.waits:
                used.add(shape.cause)
        chart.rows.append(row)
        y += height

    chart.height = y + 4
    chart.pauses = [Shape(p.x, p.y, p.width, y - AXIS_HEIGHT, p.css, p.title) for p in chart.pauses]
    chart.causes = [(cause, words) for cause, words in CAUSES.items() if cause in used]
    return chart


def _fanout(
    row: Row,
    agg: dict[str, Any],
    counts: dict[int, int],
    grid: tuple[datetime, float],
    approval: dict[str, Any] | None,
    axis: timeaxis.Axis,
    now: datetime,
) -> None:
    """A fan-out's spread: a band from first start to last finish, and a density strip."""
    band_y = row.y + ROW_HEIGHT - 4
    first, last = agg["first"], (now if agg["open"] else agg["last"])
    summary = (
        f"{agg['total']:,} children: {agg['done']:,} done, {agg['open']:,} open, "
        f"{agg['failed']:,} failed; spread {_span(first, last)}"
    )
    row.title = f"{row.title}; {summary}"
    if first is not None and last is not None:
        x, width = axis.span(first, last)
        css = "af-wf-band" + (" af-wf-band--failed" if agg["failed"] else "")
        row.bars.append(Shape(x, band_y, width, 4, css, summary))
    strip_y, strip_height = band_y + 5, FANOUT_HEIGHT - ROW_HEIGHT - 2
    if counts:
        peak = max(counts.values())
        origin, seconds = grid
        for bucket, n in sorted(counts.items()):
            level = max(1, math.ceil(4 * n / peak))
            since = origin + timedelta(seconds=bucket * seconds)
            x, width = axis.span(since, since + timedelta(seconds=seconds))
            at = timeaxis.human((since - axis.start).total_seconds())
            title = f"{n:,} children started in the {timeaxis.human(seconds)} from +{at}"
            css = f"af-wf-cell af-wf-cell--{level}"
            row.cells.append(Shape(x, strip_y, width, strip_height, css, title))
    if agg["throttled"] and agg["throttle_from"] and agg["throttle_to"]:
        x, width = axis.span(agg["throttle_from"], agg["throttle_to"])
        row.waits.append(
            Shape(
                x,
                strip_y - 1,
                width,
                strip_height + 2,
                "af-wf-wait af-wf-wait--rate",
                f"{agg['throttled']:,} children wait on a rate limit",
                cause="rate",
            )
        )
    if approval is not None:
        until = approval["decided"] or now
        if approval["pending"]:
            until = now
        x, width = axis.span(approval["asked"], until)
        row.waits.append(
            Shape(
                x,
                strip_y - 1,
                width,
                strip_height + 2,
                "af-wf-wait af-wf-wait--person",
                f"{approval['total']:,} approvals of children, {approval['pending']:,} pending",
                cause="person",
            )
        )
