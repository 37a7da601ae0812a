"""The database's clock: what leases, timers, heartbeats and deadlines are stamped with.

Every worker compares times it writes with times other workers wrote (a lease's expiry, a
timer's due time, a heartbeat). Stamped with each machine's own clock, a worker whose clock
runs 2 h fast keeps its runs "leased" long after it died, and one that runs slow takes
over live leases and runs tools twice. So the engine reads time from ``now()``: this
process's clock corrected by its offset from the database server's, measured with one
``SELECT`` every ``SYNC_SECONDS`` (half a round trip of error, far below a lease). The
measurement opens a short connection of its own (about 7 ms, twice a minute).

On SQLite the database is a file on this machine: its clock is this machine's.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

from django.db import DatabaseError, connections
from django.utils import timezone

from agentflow.models.database import alias as database_alias

# How often a process measures its offset from the database's clock again. Clocks drift
# by milliseconds a day; a stepped clock (NTP, a VM resumed) is caught within this long.
SYNC_SECONDS = 30.0

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_state = {"offset": timedelta(0), "measured_at": float("-inf")}


def now() -> datetime:
    """The current time as the database server tells it (aware, UTC)."""
    if time.monotonic() - _state["measured_at"] > SYNC_SECONDS:
        _measure()
    return timezone.now() + _state["offset"]


def offset() -> timedelta:
    """How far the database's clock is ahead of this process's (negative: behind)."""
    now()
    return _state["offset"]


def forget() -> None:
    """Measure again on the next ``now()`` (a test that moves the clock, a new database)."""
    _state["measured_at"] = float("-inf")


def _measure() -> None:
    with _lock:
        if time.monotonic() - _state["measured_at"] <= SYNC_SECONDS:
            return  # another thread measured meanwhile
        alias = database_alias()
        if connections[alias].vendor != "postgresql":
            _state["offset"], _state["measured_at"] = timedelta(0), time.monotonic()
            return
        try:
            _state["offset"] = _read_offset(alias)
        except DatabaseError as exc:  # keep the last offset; try again in a second
            logger.warning("could not read the database's clock: %s", exc)
            _state["measured_at"] = time.monotonic() - SYNC_SECONDS + 1.0
            return
        _state["measured_at"] = time.monotonic()


def _read_offset(alias: str) -> timedelta:
    """One ``SELECT clock_timestamp()`` on a connection of its own, closed after.

    Its own connection keeps the read out of whatever transaction the caller has open (a
    failed one would refuse it) and out of the statements a step is counted by.
    """
    db = connections.create_connection(alias)
    try:
        with db.cursor() as cursor:
            before = timezone.now()
            cursor.execute("SELECT clock_timestamp()")
            server = cursor.fetchone()[0]
            after = timezone.now()
    finally:
        db.close()
    return server - (before + (after - before) / 2)
