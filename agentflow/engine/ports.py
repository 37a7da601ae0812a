"""The engine's window on the transport: a dispatcher that sends wake-ups.

The default, ``agentflow.tasks.CeleryDispatcher``, sends Celery messages; the setting
``AGENTFLOW["DISPATCHER"]`` names another. Wake-ups are sent after the current
transaction commits, so a message never points at a row that does not exist yet.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Protocol
from uuid import UUID

from django.utils.module_loading import import_string

from agentflow import conf


class Dispatcher(Protocol):
    def advance(self, run_id: UUID, *, eta: datetime | None = None) -> None:
        """Ask a worker to advance the run (at ``eta`` at the earliest), after commit."""

    def run_child(self, step_id: int, *, eta: datetime | None = None) -> None:
        """Ask a worker to run one fan-out child, after commit."""

    def fan_out(self, run_id: UUID, position: int, step_ids: list[int]) -> None:
        """Run the children in parallel, then join the fan-out (a Celery chord), after commit."""


@cache
def _load(path: str) -> Dispatcher:
    return import_string(path)()


def dispatcher() -> Dispatcher:
    """Return the configured dispatcher."""
    return _load(conf.setting("DISPATCHER"))
