"""Celery adapters: thin tasks that hand run ids to the engine, and the dispatcher.

Every task is safe to receive twice. ``acks_late`` with ``reject_on_worker_lost`` puts a
message back when its worker dies; the lease and the reconciler do the rest.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from uuid import UUID

from celery import shared_task
from celery.signals import worker_ready
from django.db import transaction

from agentflow import conf
from agentflow.engine import executor, reconciler

DURABLE = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@shared_task(name="agentflow.advance", **DURABLE)
def advance(run_id: str) -> str:
    """Advance one run as far as it can go now."""
    return executor.advance(UUID(run_id), worker=worker_name())


@shared_task(name="agentflow.reconcile", **DURABLE)
def reconcile() -> dict[str, int]:
    """Wake runs left behind by dead workers, lost messages or due timers."""
    return reconciler.reconcile()


def _queue_options() -> dict[str, str]:
    queue = conf.setting("QUEUE")
    return {"queue": queue} if queue else {}


class CeleryDispatcher:
    """Send ``agentflow.advance`` messages once the current transaction commits."""

    def advance(self, run_id: UUID, *, eta: datetime | None = None) -> None:
        options = _queue_options()
        transaction.on_commit(lambda: advance.apply_async((str(run_id),), eta=eta, **options))


@worker_ready.connect
def reconcile_at_worker_start(sender: object = None, **kwargs: object) -> None:
    """A worker that starts after a crash picks up what its predecessor left."""
    reconcile.apply_async(**_queue_options())
