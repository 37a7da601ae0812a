"""Print a run's events as they arrive: the progress output of long commands."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from django.core.management.base import CommandError

from agentflow.models import Event, Run


def follow(run: Run, write: Callable[[str], None], timeout: float) -> Run:
    """Write each new event of ``run`` until it finishes or pauses; return the fresh row."""
    deadline, seq = time.monotonic() + timeout, 0
    while True:
        run.refresh_from_db()
        done = run.is_finished or run.status == Run.Status.PAUSED
        for event in Event.objects.filter(run=run, seq__gt=seq).order_by("seq"):
            seq = event.seq
            data = json.dumps(event.data, default=str)
            write(f"  #{event.seq:<4} {event.type:<16} {data[:120]}")
        if done:
            return run
        if time.monotonic() > deadline:
            raise CommandError(f"run {run.id} is still {run.status} after {timeout:g}s")
        time.sleep(0.1)
