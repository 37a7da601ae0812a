"""Per-run leases with fencing tokens, renewed by one heartbeat thread per process.

Only the holder of a run's current token may write its steps (see ``store.Fence``).
A worker that dies stops renewing; its lease expires after LEASE_SECONDS and the
reconciler hands the run to another worker. Heartbeats renew on a timer, never per step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from agentflow import conf
from agentflow.engine import store
from agentflow.engine.interrupts import LeaseLost
from agentflow.models import Run

logger = logging.getLogger("agentflow.leases")


def lease_duration() -> timedelta:
    return timedelta(seconds=conf.setting("LEASE_SECONDS"))


@dataclass(eq=False)
class Lease:
    """A held run: its fence, the wake counter seen at acquisition, and the row itself."""

    run: Run
    fence: store.Fence
    wake_seq: int
    # Set by the heartbeat thread when renewal finds the token gone (stolen or cancelled).
    lost: threading.Event = field(default_factory=threading.Event)

    def renew(self) -> bool:
        return renew(self)


def acquire(run_id: UUID, owner: str) -> Lease | None:
    """Take the run's lease if it is free or expired; else ask the holder to run again.

    Returns None when the run is held by a live worker, finished, or missing.
    """
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(id=run_id).first()
        if run is None or run.status not in Run.ACTIVE:
            return None
        if run.lease_expires_at is not None and run.lease_expires_at >= now:
            # The holder checks wake_seq before it suspends, so this wake-up is not lost.
            Run.objects.filter(id=run_id).update(wake_seq=F("wake_seq") + 1)
            return None
        first_start = run.status == Run.Status.PENDING
        run.status = Run.Status.RUNNING
        run.lease_owner = owner[:200]
        run.lease_token += 1
        run.lease_expires_at = now + lease_duration()
        run.started_at = run.started_at or now
        run.wait_reason = ""
        run.nudged_at = None
        run.save(
            update_fields=[
                "status",
                "lease_owner",
                "lease_token",
                "lease_expires_at",
                "started_at",
                "wait_reason",
                "nudged_at",
            ]
        )
        if first_start:
            store.append_event(run.id, "run.started", {"worker": run.lease_owner})
    return Lease(run=run, fence=store.Fence(run.id, run.lease_token), wake_seq=run.wake_seq)


def release_waiting(lease: Lease, *, reason: str, wake_at: datetime | None) -> bool:
    """Park the run until ``wake_at`` or a wake-up; False if a wake-up arrived meanwhile.

    Raises ``LeaseLost`` if the lease is gone. When it returns False the caller still
    holds the lease and should replay again, because what it waited on may be ready.
    """
    with transaction.atomic():
        parked = Run.objects.filter(
            id=lease.fence.run_id,
            lease_token=lease.fence.token,
            wake_seq=lease.wake_seq,
            status=Run.Status.RUNNING,
        ).update(
            status=Run.Status.WAITING,
            wait_reason=reason[:500],
            wake_at=wake_at,
            lease_expires_at=None,
            lease_owner="",
        )
        if parked:
            store.append_event(
                lease.fence.run_id,
                "run.waiting",
                {"reason": reason, "wake_at": wake_at.isoformat() if wake_at else None},
            )
            return True
    row = (
        Run.objects.filter(id=lease.fence.run_id)
        .values_list("lease_token", "wake_seq", "status")
        .first()
    )
    if row is None or row[0] != lease.fence.token or row[2] != Run.Status.RUNNING:
        raise LeaseLost(f"run {lease.fence.run_id} was taken over or cancelled")
    lease.wake_seq = row[1]
    return False


def renew(lease: Lease) -> bool:
    """Push the lease's expiry forward; False if the token is no longer ours."""
    return bool(
        Run.objects.filter(
            id=lease.fence.run_id, lease_token=lease.fence.token, status=Run.Status.RUNNING
        ).update(lease_expires_at=timezone.now() + lease_duration())
    )


class Renewable(Protocol):
    """Anything the heartbeat keeps alive: run leases, fan-out claims, concurrency slots."""

    lost: threading.Event

    def renew(self) -> bool: ...


class Heartbeat:
    """One daemon thread per process that renews every lease this process holds."""

    def __init__(self) -> None:
        self._leases: set[Renewable] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextlib.contextmanager
    def holding(self, lease: Renewable) -> Iterator[Renewable]:
        """Keep ``lease`` renewed while the block runs."""
        with self._lock:
            self._ensure_thread()
            self._leases.add(lease)
        try:
            yield lease
        finally:
            with self._lock:
                self._leases.discard(lease)

    def _ensure_thread(self) -> None:
        # Threads do not survive fork: a prefork child starts its own.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._loop, name="agentflow-heartbeat", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(conf.setting("LEASE_SECONDS") / 3)
            with self._lock:
                leases = list(self._leases)
            for lease in leases:
                try:
                    if not lease.renew():
                        lease.lost.set()
                except Exception:  # a database or Redis hiccup must not kill the heartbeat
                    logger.exception("renewing %r failed", lease)
                    close_old_connections()
            if not leases:
                connection.close()  # nothing to renew: hold no idle connection


heartbeat = Heartbeat()
