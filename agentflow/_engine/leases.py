"""Per-run leases with fencing tokens, renewed by one heartbeat thread per process.

Only the holder of a run's current token may write its steps (see ``step_rows.Fence``).
A worker that dies stops renewing; its lease expires after LEASE_SECONDS and the
reconciler hands the run to another worker. Heartbeats renew on a timer, never per step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from django.db import close_old_connections, connection

from agentflow import conf
from agentflow._engine import logs
from agentflow._engine.interrupts import LeaseLost
from agentflow._engine.state import run_rows, step_rows
from agentflow._engine.state.run_rows import Busy
from agentflow._guardrails import fleet
from agentflow.models import Run, clock

logger = logging.getLogger("agentflow.leases")


def lease_duration() -> timedelta:
    return timedelta(seconds=conf.setting("LEASE_SECONDS"))


@dataclass(eq=False)
class Lease:
    """A held run: its fence, the wake counter seen at acquisition, and the row itself."""

    run: Run
    fence: step_rows.Fence
    wake_seq: int
    # Taken as the run left PENDING: nothing has advanced it before.
    first_start: bool = False
    # Set by the heartbeat thread when renewal finds the token gone (stolen or cancelled).
    lost: threading.Event = field(default_factory=threading.Event)

    def renew(self) -> bool:
        return renew(self)


def retry_after(expires_at: datetime) -> datetime:
    """Just after a lease expires, with jitter, so put-off wake-ups do not arrive in a herd."""
    seconds = conf.setting("LEASE_SECONDS")
    return expires_at + timedelta(seconds=0.05 + random.random() * min(1.0, seconds / 10))


def acquire(run_id: UUID, owner: str) -> Lease | Busy | None:
    """Take the run's lease if it is free or expired.

    Returns ``Busy`` when another holder's lease is still valid: the holder is asked to
    look again before it parks (``wake_seq``), and the caller should come back at
    ``retry_at`` in case the holder is dead. Only one such wake-up is kept per lease
    expiry (``nudged_at`` records it), so duplicates do not multiply. Returns None when
    the run is finished or missing, or a put-off wake-up is already on its way.
    """
    owner = owner[:200]
    now = clock.now()
    taken = run_rows.take_lease(run_id, owner, now + lease_duration(), now)
    if taken is None:
        taken = run_rows.take_lease_locked(run_id, owner, now, now + lease_duration(), retry_after)
        if not isinstance(taken, tuple):
            return taken
    run, first_start = taken
    fence = step_rows.Fence(run.id, run.lease_token)
    return Lease(run=run, fence=fence, wake_seq=run.wake_seq, first_start=first_start)


def release_waiting(lease: Lease, *, reason: str, wake_at: datetime | None) -> bool:
    """Park the run until ``wake_at`` or a wake-up; False if a wake-up arrived meanwhile.

    Raises ``LeaseLost`` if the lease is gone. When it returns False the caller still
    holds the lease and should replay again, because what it waited on may be ready.
    """
    if run_rows.park(lease.fence, lease.wake_seq, reason, wake_at):
        return True
    row = run_rows.lease_state(lease.fence.run_id)
    if row is None or row[0] != lease.fence.token or row[2] != Run.Status.RUNNING:
        raise LeaseLost(f"run {lease.fence.run_id} was taken over or cancelled")
    lease.wake_seq = row[1]
    return False


def renew(lease: Lease) -> bool:
    """Push the lease's expiry forward; False if the token is no longer ours."""
    return run_rows.renew_lease(lease.fence, clock.now() + lease_duration())


class Renewable(Protocol):
    """Anything the heartbeat keeps alive: run leases, fan-out claims, concurrency slots."""

    lost: threading.Event

    def renew(self) -> bool: ...


class Heartbeat:
    """One daemon thread per process that renews every lease this process holds.

    In a worker it also runs the reconciler every RECONCILE_EVERY seconds (``reconciling``),
    so recovery needs no beat: every worker process tries, and a fleet-wide lock lets one
    pass run at a time. And it keeps the process in the fleet's census (``announcing``).
    """

    def __init__(self) -> None:
        self._leases: set[Renewable] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._reconcile: Callable[[], object] | None = None
        self._announce: Callable[[], object] | None = None

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

    def reconciling(self, reconcile_pass: Callable[[], object]) -> None:
        """Also call ``reconcile_pass`` from this thread every RECONCILE_EVERY seconds."""
        with self._lock:
            self._reconcile = reconcile_pass
            self._ensure_thread()

    def announcing(self, member: str, slots: int) -> None:
        """Count this process in the fleet's census (``slots`` tasks at once), now and on
        every renewal, until it dies."""

        def announce() -> None:
            fleet.announce(member, slots)

        with self._lock:
            self._announce = announce
            self._ensure_thread()
        self._guarded(announce, "announcing this worker process", None)

    def _ensure_thread(self) -> None:
        # Threads do not survive fork: a prefork child starts its own.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._loop, name="agentflow-heartbeat", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        """Renew and reconcile for ever; nothing that goes wrong in one round ends the thread.

        A round that fails (settings unreadable for a moment, say) is logged, and the next
        one comes a second later: a dead heartbeat would let every lease here lapse.
        """
        now = time.monotonic()
        schedule = {"renewal": now, "pass": now}
        first = True
        while True:
            try:
                first = self._round(schedule, first)
            except Exception:
                logger.exception("a heartbeat round failed; the next one is in a second")
                time.sleep(1.0)

    def _round(self, schedule: dict[str, float], first: bool) -> bool:
        if first:
            now = time.monotonic()
            schedule["renewal"] = now + conf.setting("LEASE_SECONDS") / 3
            # A random first pass spreads the fleet's passes over the period.
            schedule["pass"] = now + random.random() * conf.setting("RECONCILE_EVERY")
        with self._lock:
            reconcile = self._reconcile
        wake = min(schedule["renewal"], schedule["pass"]) if reconcile else schedule["renewal"]
        time.sleep(max(0.0, wake - time.monotonic()))
        now = time.monotonic()
        if now >= schedule["renewal"]:
            schedule["renewal"] = now + conf.setting("LEASE_SECONDS") / 3
            self._renew_all()
        if reconcile is not None and now >= schedule["pass"]:
            every = conf.setting("RECONCILE_EVERY")
            schedule["pass"] = now + every * random.uniform(0.9, 1.1)
            self._guarded(reconcile, "a reconciler pass", None)
        with self._lock:
            idle = not self._leases
        if idle:
            connection.close()  # nothing to renew: hold no idle connection
        return False

    def _renew_all(self) -> None:
        with self._lock:
            leases, announce = list(self._leases), self._announce
        if announce is not None:
            self._guarded(announce, "announcing this worker process", None)
        for lease in leases:
            run = getattr(lease, "run", None)  # a run's lease; claims and slots have none
            if not self._guarded(lease.renew, f"renewing {lease!r}", getattr(run, "id", None)):
                lease.lost.set()

    @staticmethod
    def _guarded(call: Callable[[], object], doing: str, run_id: Any) -> object:
        """Call; a database or Redis hiccup is logged and must not kill the heartbeat.

        Returns True after a failure, so a lease is not given up for a hiccup: it stays
        ours until the renewal that finds the token gone.
        """
        try:
            return call()
        except Exception:
            logger.exception("%s failed", doing, extra=logs.about(run_id))
            close_old_connections()
            return True


heartbeat = Heartbeat()
