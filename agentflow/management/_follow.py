"""Print a run's events as they arrive: the progress output of long commands."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from django.core.management.base import CommandError

from agentflow.management._exit_codes import ExitCode
from agentflow.models import Approval, Event, Run


def follow(run: Run, write: Callable[[str], None], timeout: float) -> Run:
    """Write each new event of ``run`` until it finishes, pauses or waits for a person.

    Returns the fresh row; a run waiting for an approval has ``pending_approvals()``.
    """
    deadline, seq = time.monotonic() + timeout, 0
    while True:
        run.refresh_from_db()
        done = run.is_finished or run.status == Run.Status.PAUSED or bool(pending_approvals(run))
        for event in Event.objects.filter(run=run, seq__gt=seq).order_by("seq"):
            seq = event.seq
            data = json.dumps(event.data, default=str)
            write(f"  #{event.seq:<4} {event.type:<16} {data[:120]}")
        if done:
            return run
        if time.monotonic() > deadline:
            raise CommandError(
                f"run {run.id} is still {run.status} after {timeout:g}s; it goes on without "
                "this command (`agentflow status` shows it).",
                returncode=ExitCode.STILL_GOING,
            )
        time.sleep(0.1)


def pending_approvals(run: Run) -> list[Approval]:
    """The approvals a waiting run waits for (none unless it is waiting)."""
    if run.status != Run.Status.WAITING:
        return []
    return list(run.approvals.filter(status=Approval.Status.PENDING).order_by("created_at"))


def approval_url(approval: Approval) -> str:
    """Where a person decides the approval: its admin page (the path, as the site routes it)."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("admin:agentflow_approval_change", args=[approval.id])
    except NoReverseMatch:  # the site does not route agentflow's admin
        return f"approval {approval.id} in the Django admin"
