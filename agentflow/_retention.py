"""Retention: delete old finished runs with everything they recorded, in small batches.

A run is pruned once it finished (succeeded, failed or cancelled) before the cut-off and no
fork still names it as its parent (the fork's history points at it). Each batch of runs
goes in its own short transaction, children first, so no lock is held for long and a
prune stopped half-way leaves whole runs behind, never half a run. The batch is checked
again in that transaction, under a lock on its run rows, so a run retried or forked after
it was picked is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Exists, OuterRef, QuerySet

from agentflow._engine.state import run_actions
from agentflow.exceptions import InvalidInput
from agentflow.models import Approval, Event, Run, Step, clock

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
BATCH = 200


def parse_age(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"3600s"`` or ``"2w"`` as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(text))
    if match is None:
        raise InvalidInput(
            f"{text!r} is not an age: write a whole number and a unit, e.g. 30d, 12h, 90m"
        )
    return timedelta(seconds=int(match[1]) * UNITS[match[2]])


@dataclass
class Pruned:
    """What a prune deleted (or, dry, would delete), and what it kept for forks."""

    runs: int = 0
    steps: int = 0
    events: int = 0
    approvals: int = 0
    kept_for_forks: int = 0

    def __str__(self) -> str:
        return (
            f"{self.runs} runs, {self.steps} steps, {self.events} events, {self.approvals} "
            f"approvals; {self.kept_for_forks} old runs kept because a fork references them"
        )


def prunable(before: datetime) -> QuerySet[Run]:
    """Runs finished before ``before`` that no fork references."""
    forked = Run.objects.filter(parent_id=OuterRef("pk"))
    return Run.objects.filter(status__in=Run.TERMINAL, finished_at__lt=before).exclude(
        Exists(forked)
    )


def prune(
    older_than: timedelta,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    progress: Callable[[Pruned], None] | None = None,
) -> Pruned:
    """Delete runs that finished more than ``older_than`` ago, ``batch`` runs at a time."""
    before = clock.now() - older_than
    old = Run.objects.filter(status__in=Run.TERMINAL, finished_at__lt=before)
    report = Pruned(kept_for_forks=old.count() - prunable(before).count())
    if dry_run:
        ids = prunable(before).values("id")
        report.runs = prunable(before).count()
        report.steps = Step.objects.filter(run_id__in=ids).count()
        report.events = Event.objects.filter(run_id__in=ids).count()
        report.approvals = Approval.objects.filter(run_id__in=ids).count()
        return report
    while True:
        picked = _pick(before, batch)
        if not picked:
            return report
        deleted = run_actions.delete_whole(prunable(before), picked)
        report.runs += deleted["runs"]
        report.steps += deleted["steps"]
        report.events += deleted["events"]
        report.approvals += deleted["approvals"]
        if progress is not None:
            progress(report)


def _pick(before: datetime, batch: int) -> list[UUID]:
    """The next batch of prunable run ids, oldest first (checked again before deleting)."""
    return list(prunable(before).order_by("finished_at").values_list("id", flat=True)[:batch])
