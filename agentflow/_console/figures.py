"""The overview's figures: what the runs of a period did, read in aggregate queries.

Every figure is a handful of GROUP BY queries over the runs the user may view (the
``runs`` queryset handed in, already narrowed by ``RUN_VIEW_RULE`` and the agent), so the
number of queries does not grow with the number of runs. Each bar, segment and number
carries the link to the admin list of the runs (or approvals) behind it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from django.db.models.functions import Trunc
from django.urls import reverse

from agentflow._console import percentiles, timeaxis
from agentflow._console.svg import Shape
from agentflow.models import Approval, Budget, BudgetSpend, Run, Step


@dataclass(frozen=True)
class Period:
    key: str
    label: str
    length: timedelta
    bucket: timedelta
    trunc: str  # the unit the database truncates to; buckets are whole multiples of it


PERIODS = {
    p.key: p
    for p in (
        Period("24h", "last 24 hours", timedelta(hours=24), timedelta(hours=1), "hour"),
        Period("7d", "last 7 days", timedelta(days=7), timedelta(hours=6), "hour"),
        Period("30d", "last 30 days", timedelta(days=30), timedelta(days=1), "day"),
    )
}
DEFAULT_PERIOD = "24h"
# Stacked bottom to top: finished runs first, then those still going.
STATUSES = (
    Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED, Run.Status.PAUSED,
    Run.Status.WAITING, Run.Status.RUNNING, Run.Status.PENDING,
)  # fmt: skip
# Steps whose duration is work: waits (approval, sleep, wait) and fan-out parents, whose
# children are counted themselves, are left out.
WORK_KINDS = (Step.Kind.CALL, Step.Kind.LLM, Step.Kind.STEP)
FRACTIONS = (0.5, 0.95)
NONE = "\N{EN DASH}"  # a figure with nothing to measure
# The runs list's filters by when a run's steps started (RunOverviewMixin allows them).
STEPS_FROM = "steps__started_at__gte"
STEPS_UNTIL = "steps__started_at__lt"
# Pending approvals by age: (label, younger than), the last one has no bound.
AGES = (
    ("< 5 min", timedelta(minutes=5)),
    ("< 1 h", timedelta(hours=1)),
    ("< 1 day", timedelta(days=1)),
    ("older", None),
)

WIDTH, HEIGHT = 640, 200
WIDE = 1000  # a chart across the page
LEFT, RIGHT, TOP, BOTTOM = 52, WIDTH - 8, 10, HEIGHT - 22


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Line:
    y: float
    text: str
    css: str = "af-chart-grid"


@dataclass
class Chart:
    """A bar chart: bars (stacked or not), x labels, a y scale and limit lines."""

    shapes: list[Shape] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    scale: float = 1.0  # the value at the top of the plot

    @property
    def limits(self) -> list[Line]:
        return [line for line in self.lines if line.css == "af-ov-limit"]


@dataclass(frozen=True)
class Number:
    """One figure as a number: its value in words and the list behind it."""

    label: str
    value: str
    href: str
    note: str = ""
    testid: str = ""


@dataclass
class Overview:
    period: Period
    since: datetime
    until: datetime
    agent: str
    total: int = 0
    by_status: dict[str, Number] = field(default_factory=dict)
    runs: Chart = field(default_factory=lambda: Chart(width=WIDE, right=WIDE - 8))
    failure: Number | None = None
    failures: Chart = field(default_factory=Chart)
    durations: list[Number] = field(default_factory=list)
    spend: Chart = field(default_factory=Chart)
    tokens: Chart = field(default_factory=Chart)
    days: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    show_budgets: bool = False
    approvals: list[Number] = field(default_factory=list)
    ages: Chart = field(default_factory=Chart)


# -- links ------------------------------------------------------------------------------


def stamp(at: datetime) -> str:
    """A time as the admin's list filters take it (ISO 8601, UTC)."""
    return at.astimezone(UTC).isoformat()


class Links:
    """URLs of the admin lists behind a figure, filtered as the figure counts."""

    def __init__(self, site: str, agent: str) -> None:
        self.runs_url = reverse(f"{site}:agentflow_run_changelist")
        self.approvals_url = reverse(f"{site}:agentflow_approval_changelist")
        self.budget_url: Callable[[Any], str] = lambda pk: reverse(
            f"{site}:agentflow_budget_change", args=[pk]
        )
        self.agent = agent

    def runs(self, since: datetime, until: datetime, **filters: str) -> str:
        params = {**filters, "created_at__gte": stamp(since), "created_at__lt": stamp(until)}
        if self.agent:
            params["agent__exact"] = self.agent
        return f"{self.runs_url}?{urlencode(params)}"

    def runs_with_steps(self, since: datetime, until: datetime) -> str:
        """Runs with a step that started in [since, until) (RunOverviewMixin allows it)."""
        params = {STEPS_FROM: stamp(since), STEPS_UNTIL: stamp(until)}
        if self.agent:
            params["agent__exact"] = self.agent
        return f"{self.runs_url}?{urlencode(params)}"

    def approvals(self, since: datetime | None, until: datetime | None) -> str:
        params = {"status__exact": Approval.Status.PENDING}
        if since is not None:
            params["created_at__gte"] = stamp(since)
        if until is not None:
            params["created_at__lt"] = stamp(until)
        if self.agent:
            params["run__agent__exact"] = self.agent
        return f"{self.approvals_url}?{urlencode(params)}"


# -- the period's buckets -----------------------------------------------------------------


def window(period: Period, now: datetime) -> tuple[datetime, int]:
    """The first bucket's start and the number of buckets; the last one holds ``now``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period.bucket >= timedelta(days=1):
        last = day
    else:
        hours = int(period.bucket.total_seconds() // 3600)
        last = day + timedelta(hours=(now.hour // hours) * hours)
    count = math.ceil(period.length / period.bucket)
    return last - (count - 1) * period.bucket, count


def bucket_of(at: datetime, since: datetime, width: timedelta) -> int:
    return int((at.astimezone(UTC) - since) // width)


# -- drawing ------------------------------------------------------------------------------


def scale(top: float, *, whole: bool = True) -> tuple[float, list[float]]:
    """A y maximum at or above ``top`` and up to five round gridline values from 0."""
    if top <= 0:
        return 1.0, [0.0, 1.0]
    raw = top / 4
    step = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if raw <= step * multiple:
            step *= multiple
            break
    if whole:
        step = max(step, 1)
    lines = [step * i for i in range(math.ceil(top / step - 1e-9) + 1)]
    return lines[-1], lines


def y_of(value: float, maximum: float) -> float:
    return BOTTOM - (BOTTOM - TOP) * (value / maximum if maximum else 0)


def x_labels(chart: Chart, starts: list[datetime], width: float, period: Period) -> None:
    """Up to eight labels under the bars: hours for short buckets, dates for days."""
    every = max(1, math.ceil(len(starts) / 8))
    for i, start in enumerate(starts):
        if i % every:
            continue
        text = f"{start:%b %d}" if period.bucket >= timedelta(days=1) else f"{start:%d %H:%M}"
        chart.labels.append(Label(LEFT + (i + 0.5) * width, HEIGHT - 6, text))


def grid(chart: Chart, maximum: float, lines: list[float], words: Callable[[float], str]) -> None:
    for value in lines:
        chart.lines.append(Line(y_of(value, maximum), words(value)))


def count_words(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def money(value: Decimal | float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:,.4f}"


# -- the figures --------------------------------------------------------------------------


def build(
    runs: QuerySet[Run],
    period: Period,
    agent: str,
    now: datetime,
    *,
    site: str = "admin",
    show_budgets: bool = False,
) -> Overview:
    """Every figure of the overview, for ``runs`` (the visible ones) of ``agent`` if given."""
    since, count = window(period, now)
    until = since + count * period.bucket
    if agent:
        runs = runs.filter(agent=agent)
    recent = runs.filter(created_at__gte=since)
    links = Links(site, agent)
    view = Overview(period, since, until, agent, show_budgets=show_budgets)
    starts = [since + i * period.bucket for i in range(count)]
    _runs_by_status(view, recent, starts, links)
    steps = steps_of(runs)
    _durations(view, recent, steps, links)
    _spend(view, steps, links, now)
    if show_budgets:
        _budgets(view, agent, now, links)
    _approvals(view, runs, links, now)
    return view


def _runs_by_status(view: Overview, recent: QuerySet, starts: list[datetime], links: Links) -> None:
    period = view.period
    rows = (
        recent.annotate(at=Trunc("created_at", period.trunc, tzinfo=UTC))
        .values("at", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts: list[dict[str, int]] = [{} for _ in starts]
    for r in rows:
        i = bucket_of(r["at"], view.since, period.bucket)
        if 0 <= i < len(starts):
            counts[i][r["status"]] = counts[i].get(r["status"], 0) + r["n"]
    totals = {s: sum(c.get(s, 0) for c in counts) for s in STATUSES}
    view.total = sum(totals.values())
    view.by_status = {
        s: Number(s, f"{totals[s]:,}", links.runs(view.since, view.until, status__exact=s))
        for s in STATUSES
    }
    # Runs over time, stacked by status.
    chart = view.runs
    width = (chart.right - LEFT) / len(starts)
    maximum, lines = scale(max((sum(c.values()) for c in counts), default=0))
    grid(chart, maximum, lines, count_words)
    for i, (start, bucket) in enumerate(zip(starts, counts, strict=True)):
        end, base = start + period.bucket, 0
        for status in STATUSES:
            n = bucket.get(status, 0)
            if not n:
                continue
            top, bottom = y_of(base + n, maximum), y_of(base, maximum)
            chart.shapes.append(
                Shape(
                    LEFT + i * width + 1,
                    top,
                    max(width - 2, 1),
                    bottom - top,
                    f"af-ov-bar af-ov--{status}",
                    title=f"{n:,} {status} runs created {_when(start, end)}",
                    href=links.runs(start, end, status__exact=status),
                    testid="runs-segment",
                )
            )
            base += n
    x_labels(chart, starts, width, period)
    # Failure rate: failed among finished runs, over the period and per bucket.
    finished = sum(totals[s] for s in Run.TERMINAL)
    failed = totals[Run.Status.FAILED]
    rate = failed / finished if finished else 0.0
    view.failure = Number(
        "failure rate",
        f"{rate:.1%}" if finished else NONE,
        links.runs(view.since, view.until, status__exact=Run.Status.FAILED),
        f"{failed:,} failed of {finished:,} finished",
        "failure-rate",
    )
    chart = view.failures
    width = (chart.right - LEFT) / len(starts)
    grid(chart, 1.0, [0.0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v:.0%}")
    for i, (start, bucket) in enumerate(zip(starts, counts, strict=True)):
        done = sum(bucket.get(s, 0) for s in Run.TERMINAL)
        bad = bucket.get(Run.Status.FAILED, 0)
        if not done:
            continue
        top = y_of(bad / done, 1.0)
        end = start + period.bucket
        chart.shapes.append(
            _bar(
                i,
                width,
                1,
                top,
                "af-ov-bar af-ov-rate",
                links.runs(start, end, status__exact=Run.Status.FAILED),
                f"{bad / done:.0%} failed ({bad:,} of {done:,}) {_when(start, end)}",
                "failure-segment",
            )
        )
    x_labels(chart, starts, width, period)


def steps_of(runs: QuerySet[Run]) -> QuerySet[Step]:
    """The steps of ``runs``, joined to them only when ``runs`` is narrowed at all.

    Over every run (a staff user, the whole site) the steps are read on their own: joining
    100,000 runs to their steps costs more than the rest of the page.
    """
    if not runs.query.has_filters():
        return Step.objects.all()
    return Step.objects.filter(run__in=runs.values("pk"))


def _durations(view: Overview, recent: QuerySet, steps: QuerySet, links: Links) -> None:
    """p50/p95 of the period's runs (created in it) and of its work steps (started in it)."""
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    finished = recent.filter(started_at__isnull=False, finished_at__isnull=False)
    n_runs, run_values = percentiles.durations(finished, took, FRACTIONS)
    worked = steps.filter(
        kind__in=WORK_KINDS,
        started_at__gte=view.since,
        started_at__lt=view.until,
        finished_at__isnull=False,
    )
    n_steps, step_values = percentiles.durations(worked, took, FRACTIONS)
    for what, n, values, href in (
        ("run", n_runs, run_values, links.runs(view.since, view.until, finished_at__isnull="0")),
        ("step", n_steps, step_values, links.runs_with_steps(view.since, view.until)),
    ):
        for fraction, value in zip(FRACTIONS, values, strict=True):
            words = NONE if value is None else timeaxis.human(value.total_seconds())
            view.durations.append(
                Number(
                    f"p{round(fraction * 100)} {what} duration",
                    words,
                    href,
                    f"of {n:,} finished {what}s",
                    f"p{round(fraction * 100)}-{what}",
                )
            )


def _spend(view: Overview, steps: QuerySet, links: Links, now: datetime) -> None:
    """Cost and tokens of the steps that started each day of the period (UTC days).

    Counted by the day a step ran, as daily budgets count it.
    """
    first = view.since.replace(hour=0, minute=0, second=0, microsecond=0)
    days = [first + timedelta(days=i) for i in range((now.astimezone(UTC) - first).days + 1)]
    rows = (
        steps.filter(started_at__gte=first)
        .annotate(day=Trunc("started_at", "day", tzinfo=UTC))
        .values("day")
        .annotate(cost=Sum("cost"), input=Sum("input_tokens"), output=Sum("output_tokens"))
        .order_by()
    )
    found = {r["day"].astimezone(UTC): r for r in rows}
    view.days = []
    for day in days:
        r = found.get(day, {})
        view.days.append(
            {
                "day": day,
                "cost": r.get("cost") or Decimal(0),
                "input": r.get("input") or 0,
                "output": r.get("output") or 0,
                "href": links.runs_with_steps(day, day + timedelta(days=1)),
            }
        )
    width = (RIGHT - LEFT) / len(days)
    day_period = PERIODS["30d"]
    for chart, value, words, css in (
        (view.spend, lambda d: float(d["cost"]), money, "af-ov-spend"),
        (view.tokens, lambda d: d["input"] + d["output"], count_words, "af-ov-tokens"),
    ):
        top = max((value(d) for d in view.days), default=0)
        maximum, lines = scale(top, whole=css != "af-ov-spend")
        chart.scale = maximum
        grid(chart, maximum, lines, words)
        for i, d in enumerate(view.days):
            v = value(d)
            if not v:
                continue
            top = y_of(v, maximum)
            title = (
                f"{words(v)} on {d['day']:%Y-%m-%d} (steps started that day, UTC): "
                f"{d['input']:,} input and {d['output']:,} output tokens, {money(d['cost'])}"
            )
            chart.shapes.append(
                _bar(
                    i,
                    width,
                    2,
                    top,
                    f"af-ov-bar {css}",
                    d["href"],
                    title,
                    "spend-bar" if css == "af-ov-spend" else "tokens-bar",
                )
            )
        x_labels(chart, days, width, day_period)


def _applies(budget: Budget, agent: str) -> bool:
    return not budget.agent or (bool(agent) and fnmatch.fnmatchcase(agent, budget.agent))


def _budgets(view: Overview, agent: str, now: datetime, links: Links) -> None:
    """Daily and monthly budgets in scope, their spend per window and their limit."""
    budgets = [
        b
        for b in Budget.objects.filter(
            enabled=True, period__in=(Budget.Period.DAY, Budget.Period.MONTH), run__isnull=True
        )
        if _applies(b, agent)
    ]
    windows = [f"day:{d['day']:%Y-%m-%d}" for d in view.days] + [f"month:{now:%Y-%m}"]
    spends = {
        (s.budget_id, s.window): s
        for s in BudgetSpend.objects.filter(budget__in=budgets, window__in=windows)
    }
    for budget in budgets:
        if budget.period == Budget.Period.DAY:
            keys = [f"day:{d['day']:%Y-%m-%d}" for d in view.days]
        else:
            keys = [f"month:{now:%Y-%m}"]
        cells = []
        for key in keys:
            spend = spends.get((budget.id, key))
            cost = spend.cost if spend else Decimal(0)
            tokens = (spend.input_tokens + spend.output_tokens) if spend else 0
            over = budget.max_cost is not None and cost >= budget.max_cost
            cells.append(
                {"window": key.split(":", 1)[1], "cost": cost, "tokens": tokens, "over": over}
            )
        view.budgets.append(
            {"budget": budget, "href": links.budget_url(budget.pk), "windows": cells}
        )
        # A daily cost limit is drawn on the spend chart, a token limit on the tokens one.
        if budget.period == Budget.Period.DAY and budget.max_cost is not None:
            _limit(view.spend, float(budget.max_cost), f"{budget.name}: {money(budget.max_cost)}")
        tokens = [v for v in (budget.max_input_tokens, budget.max_output_tokens) if v is not None]
        if budget.period == Budget.Period.DAY and tokens:
            _limit(view.tokens, float(sum(tokens)), f"{budget.name}: {sum(tokens):,} tokens")


def _limit(chart: Chart, value: float, text: str) -> None:
    maximum = chart.scale
    if value > maximum:  # the limit is off the scale: draw it at the top, and say so
        chart.lines.append(Line(TOP, f"{text} (above)", "af-ov-limit"))
    else:
        chart.lines.append(Line(y_of(value, maximum), text, "af-ov-limit"))


def _approvals(view: Overview, runs: QuerySet, links: Links, now: datetime) -> None:
    """Pending approvals of the visible runs (any age, not only the period's) by age."""
    bounds: list[tuple[str, datetime | None, datetime | None]] = []
    newer: datetime | None = None
    for label, age in AGES:
        older = None if age is None else now - age
        bounds.append((label, older, newer))
        newer = older
    counts = Approval.objects.filter(
        status=Approval.Status.PENDING, run__in=runs.values("pk")
    ).aggregate(
        **{
            f"a{i}": Count(
                "id",
                filter=Q(
                    *([Q(created_at__gte=since)] if since else []),
                    *([Q(created_at__lt=until)] if until else []),
                ),
            )
            for i, (_, since, until) in enumerate(bounds)
        }
    )
    chart = view.ages
    maximum, lines = scale(max(counts.values(), default=0))
    grid(chart, maximum, lines, count_words)
    width = (RIGHT - LEFT) / len(bounds)
    for i, (label, since, until) in enumerate(bounds):
        n = counts[f"a{i}"]
        href = links.approvals(since, until)
        view.approvals.append(Number(label, f"{n:,}", href, testid=f"approvals-{i}"))
        chart.labels.append(Label(LEFT + (i + 0.5) * width, HEIGHT - 6, label))
        if n:
            top = y_of(n, maximum)
            chart.shapes.append(
                _bar(
                    i,
                    width,
                    8,
                    top,
                    "af-ov-bar af-ov-age",
                    href,
                    f"{n:,} pending approvals {label.replace('<', 'younger than')}",
                    "approvals-bar",
                )
            )


def _bar(
    i: int, width: float, pad: float, top: float, css: str, href: str, title: str, testid: str
) -> Shape:
    """The ``i``th bar of a chart of bars ``width`` apart, from ``top`` down to the axis."""
    return Shape(
        LEFT + i * width + pad,
        top,
        max(width - 2 * pad, 1),
        max(BOTTOM - top, 1),
        css,
        title,
        href,
        testid,
    )


def _when(start: datetime, end: datetime) -> str:
    return f"from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
