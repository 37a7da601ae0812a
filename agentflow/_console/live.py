"""What console pages hand to their live scripts, and what they show of decided approvals.

A live page refreshes its panels from its own URL (``static/agentflow/live.js``); an
approval that stops being pending stays on the page, marked with who decided it, which
the page reads from the ``decided`` lists built here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from agentflow import permissions
from agentflow._consumers import BATCH_FRAME, STATUS_FRAME, list_cursor
from agentflow.models import Approval, Event, Run

LIST_SOCKET = "/ws/agentflow/runs/"
# Decided approvals a run page lists, newest first.
RUN_DECIDED_SHOWN = 10
# The approvals queue lists what was decided this recently (at most QUEUE_DECIDED_SHOWN).
QUEUE_DECIDED_MINUTES = 15
QUEUE_DECIDED_SHOWN = 20


def list_live(*refresh_on: str) -> dict[str, Any]:
    """A list page's live data: the list socket, its cursor, and which frames refresh it.

    ``refresh_on`` holds "status" (run status changes) and/or "approvals".
    """
    return {"socket": LIST_SOCKET, "after": list_cursor(), "refreshOn": list(refresh_on)}


def names() -> dict[str, Any]:
    """The frame names and statuses the live scripts act on, from their one definition.

    Pages that load the live scripts render it as the "af-names" JSON blob.
    """
    return {
        "batch": BATCH_FRAME,
        "status": STATUS_FRAME,
        "delta": str(Event.Type.LLM_DELTA),
        "approvals": [str(Event.Type.APPROVAL_REQUESTED), str(Event.Type.APPROVAL_DECIDED)],
        "statusAfter": {str(type_): str(status) for type_, status in Event.STATUS_AFTER.items()},
        "terminal": [str(status) for status in Run.TERMINAL],
    }


def _decided() -> QuerySet[Approval]:
    return (
        Approval.objects.exclude(status=Approval.Status.PENDING)
        .select_related("decided_by", "run")
        .order_by("-decided_at", "-id")
    )


def run_decided(run: Run) -> list[Approval]:
    """The run's most recently decided approvals."""
    return list(_decided().filter(run=run)[:RUN_DECIDED_SHOWN])


def recently_decided(user: Any) -> list[Approval]:
    """Approvals decided in the last minutes, on runs ``user`` may see."""
    since = timezone.now() - timedelta(minutes=QUEUE_DECIDED_MINUTES)
    visible = permissions.visible_runs(user, Run.objects.all())
    return list(_decided().filter(decided_at__gte=since, run__in=visible)[:QUEUE_DECIDED_SHOWN])
