"""What the run page shows, read in a fixed number of queries whatever the run's size.

A run page reads: the run, one page of its top-level steps (a count and a slice), the
children counts of every fan-out on that page (one aggregate query), the approvals of the
page's steps (one query: the time a person took, and what they changed), the run's waiting
steps and pending approvals (bounded slices), and its forks (a bounded slice). A fan-out
of 5,000 children costs the same as one of 5: its children are listed on their own paged
page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from agentflow._console.approval_form import Change, changes
from agentflow._console.errors import ErrorView, error_view
from agentflow._engine.decisions import requested_data
from agentflow.models import Approval, Run, Step

STEPS_PER_PAGE = 100
CHILDREN_PER_PAGE = 50
APPROVALS_SHOWN = 10
FORKS_SHOWN = 10
# A step's payload is shown up to this many characters; the step's admin page has it all.
PAYLOAD_CHARS = 20_000


@dataclass(frozen=True)
class Counts:
    """A fan-out's children by status: done, running (or queued), waiting, failed."""

    total: int = 0
    done: int = 0
    running: int = 0
    waiting: int = 0
    failed: int = 0


@dataclass
class StepRow:
    """One step as the timeline shows it: payloads as stored, its approval if it had one."""

    step: Step
    counts: Counts | None = None
    payloads: dict[str, Any] = field(default_factory=dict)  # arguments, output (as stored)
    approval: Approval | None = None

    @property
    def duration(self) -> timedelta | None:
        step = self.step
        if step.started_at and step.finished_at:
            return step.finished_at - step.started_at
        return None

    @property
    def waited(self) -> timedelta | None:
        """Time the step spent waiting for a person: its approval's open time, within it."""
        approval, step = self.approval, self.step
        if approval is None or approval.created_at is None:
            return None
        start = max(approval.created_at, step.started_at or approval.created_at)
        end = approval.decided_at or step.finished_at or timezone.now()
        if step.finished_at:
            end = min(end, step.finished_at)
        return max(end - start, timedelta(0))

    @property
    def running(self) -> timedelta | None:
        """The step's duration less the time a person took."""
        duration, waited = self.duration, self.waited
        if duration is None or waited is None:
            return duration
        return max(duration - waited, timedelta(0))

    @property
    def error(self) -> ErrorView | None:
        return error_view(self.step.error)

    @property
    def changes(self) -> list[Change] | None:
        """What the reviewer changed in the step's approval (None: nothing approved)."""
        if self.approval is None:
            return None
        return changes(self.approval, requested_data(self.approval))

    @property
    def tokens(self) -> int:
        return self.step.input_tokens + self.step.output_tokens


@dataclass(frozen=True)
class Wait:
    """Something the run waits on, for the "waiting on" links."""

    kind: str  # approval | signal | timer | fanout | step
    label: str
    position: int | None = None
    approval: Approval | None = None
    at: Any = None


def pretty(value: Any) -> str:
    """Indented JSON, cut at PAYLOAD_CHARS; the template escapes it."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > PAYLOAD_CHARS:
        return text[:PAYLOAD_CHARS] + "\n… (cut here; the step's own page shows all of it)"
    return text


def row(step: Step, counts: Counts | None = None, approval: Approval | None = None) -> StepRow:
    """A step's row; its arguments and output render as trees, its error as an error box."""
    payloads = {
        name: value
        for name, value in (("arguments", step.args), ("output", step.output))
        if value is not None
    }
    return StepRow(step, counts, payloads, approval)


def _approvals(steps: list[Step]) -> dict[int, Approval]:
    """The approvals of ``steps``, by step id: one query."""
    ids = [s.id for s in steps if s.kind in (Step.Kind.APPROVAL, Step.Kind.CALL)]
    if not ids:
        return {}
    return {a.step_id: a for a in Approval.objects.filter(step_id__in=ids).order_by()}


def _counts(run: Run, positions: list[int]) -> dict[int, Counts]:
    """Children counts of the fan-outs at ``positions``: one aggregate query."""
    rows = (
        Step.objects.filter(run=run, index__isnull=False, position__in=positions)
        .values("position")
        .annotate(
            total=Count("id"),
            done=Count("id", filter=Q(status=Step.Status.SUCCEEDED)),
            running=Count("id", filter=Q(status__in=Step.IN_FLIGHT)),
            waiting=Count("id", filter=Q(status=Step.Status.WAITING)),
            failed=Count("id", filter=Q(status=Step.Status.FAILED)),
        )
        .order_by()
    )
    return {
        r["position"]: Counts(r["total"], r["done"], r["running"], r["waiting"], r["failed"])
        for r in rows
    }


def steps_page(run: Run, number: str | int | None) -> tuple[Page, list[StepRow]]:
    """One page of the run's top-level steps (the last page unless asked otherwise)."""
    steps = Step.objects.filter(run=run, index__isnull=True).order_by("position")
    paginator = Paginator(steps, STEPS_PER_PAGE)
    page = paginator.get_page(number if number else paginator.num_pages)
    on_page = list(page.object_list)
    counts = _counts(run, [s.position for s in on_page])
    approvals = _approvals(on_page)
    return page, [row(s, counts.get(s.position), approvals.get(s.id)) for s in on_page]


def children_page(
    run: Run, position: int, status: str, number: str | int | None
) -> tuple[Page, list[StepRow], Counts]:
    """One page of a fan-out's children, optionally of one status, with the totals."""
    children: QuerySet[Step] = Step.objects.filter(
        run=run, position=position, index__isnull=False
    ).order_by("index")
    if status == Step.Status.RUNNING:  # the filter "running" lists every child in flight
        children = children.filter(status__in=Step.IN_FLIGHT)
    elif status:
        children = children.filter(status=status)
    page = Paginator(children, CHILDREN_PER_PAGE).get_page(number)
    counts = _counts(run, [position]).get(position, Counts())
    on_page = list(page.object_list)
    approvals = _approvals(on_page)
    return page, [row(s, approval=approvals.get(s.id)) for s in on_page], counts


def pending_approvals(run: Run) -> list[Approval]:
    """The run's first pending approvals, oldest first (one more tells "there are more")."""
    return list(
        Approval.objects.filter(run=run, status=Approval.Status.PENDING).order_by(
            "created_at", "id"
        )[: APPROVALS_SHOWN + 1]
    )


def waits(run: Run, approvals: list[Approval]) -> list[Wait]:
    """What the run waits on: its approvals, signals, timers and open fan-outs."""
    found = [Wait("approval", a.title, a.position, approval=a) for a in approvals[:APPROVALS_SHOWN]]
    if run.status not in Run.ACTIVE:
        return found
    waiting = Step.objects.filter(
        run=run, index__isnull=True, status__in=(Step.Status.WAITING, Step.Status.SCHEDULED)
    ).order_by("position")[:5]
    for step in waiting:
        if step.kind == Step.Kind.APPROVAL:
            continue  # listed with its approval above
        if step.kind == Step.Kind.WAIT:
            found.append(Wait("signal", step.name, step.position, at=step.wake_at))
        elif step.kind == Step.Kind.SLEEP:
            found.append(Wait("timer", "sleep", step.position, at=step.wake_at))
        elif step.kind in Step.FAN_OUTS:
            found.append(Wait("fanout", step.name, step.position))
        else:
            found.append(Wait("step", f"{step.kind} {step.name}", step.position, at=step.wake_at))
    if run.wake_at and not any(w.kind == "timer" for w in found):
        found.append(Wait("timer", "wake-up", at=run.wake_at))
    return found


def forks(run: Run) -> list[Run]:
    """The first runs forked from this one."""
    return list(Run.objects.filter(parent=run).order_by("created_at")[:FORKS_SHOWN])


def person_wait(run: Run) -> timedelta:
    """How long the run waited for a person: the union of its approvals' open intervals.

    One aggregate per position: approvals asked together (a fan-out's children) overlap,
    so they count once, from the first asked to the last decided (or now, if pending).
    """
    now = timezone.now()
    spans = sorted(
        Approval.objects.filter(run=run)
        .values("position")
        .annotate(
            start=Min("created_at"),
            end=Max(Coalesce("decided_at", "created_at")),
            pending=Count("id", filter=Q(status=Approval.Status.PENDING)),
        )
        .values_list("start", "end", "pending")
        .order_by()
    )
    total, reached = timedelta(0), None
    for start, end, pending in spans:
        end = now if pending else end
        if reached is not None and start < reached:
            start = reached
        if end > start:
            total += end - start
        reached = end if reached is None else max(reached, end)
    return total
