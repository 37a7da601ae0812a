"""The engine's windows on the transports: a dispatcher that sends wake-ups, and a
publisher that streams committed events live.

The default dispatcher, ``agentflow.tasks.CeleryDispatcher``, sends Celery messages; the
setting ``AGENTFLOW["DISPATCHER"]`` names another. The default publisher,
``agentflow.events.ChannelLayerPublisher``, rings the Channels layer; ``PUBLISHER`` names
another. Wake-ups are sent after the current
transaction commits, so a message never points at a row that does not exist yet.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, Protocol
from uuid import UUID

from django.utils.module_loading import import_string

from agentflow import conf


class Dispatcher(Protocol):
    def advance(self, run_id: UUID, *, eta: datetime | None = None) -> None:
        """Ask a worker to advance the run (at ``eta`` at the earliest), after commit."""

    def run_child(
        self,
        step_id: int,
        *,
        eta: datetime | None = None,
        urgent: bool = False,
        queue: str | None = None,
    ) -> None:
        """Ask a worker to run one fan-out child, after commit.

        ``urgent``: ahead of queued tool work, like a wake-up (a child whose worker died).
        ``queue``: the tool's own queue (None: agentflow's).
        """

    def fan_out(
        self, run_id: UUID, position: int, step_ids: list[int], *, queue: str | None = None
    ) -> None:
        """Run the children in parallel, then join the fan-out (a Celery chord), after commit.

        ``queue``: where the children run (their tool's queue; None: agentflow's).
        """


class Publisher(Protocol):
    def publish(self, run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
        """Stream one committed (and redacted) event; must not block or raise."""

    def publish_ephemeral(self, run_id: UUID, type_: str, data: dict[str, Any]) -> None:
        """Stream an event that is never stored (a model's token deltas), to live watchers.

        Optional: a publisher without it streams no deltas; the step's output is whole.
        """


@cache
def _load(path: str) -> Any:
    return import_string(path)()


def dispatcher() -> Dispatcher:
    """Return the configured dispatcher."""
    return _load(conf.setting("DISPATCHER"))


def publisher() -> Publisher:
    """Return the configured event publisher."""
    return _load(conf.setting("PUBLISHER"))
