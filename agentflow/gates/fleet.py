"""How many tasks the worker fleet runs at once: a census in the limit store.

Every worker process announces itself from its heartbeat thread (a prefork child as one
slot, a thread pool as its concurrency) and is counted for one lease after its last
announcement, so a process that died drops out by itself. A fan-out sizes its header
tasks by it. Without Redis the census is unknown (None): each process sees only itself.
"""

from __future__ import annotations

import logging

import redis

from agentflow import conf
from agentflow.gates.stores import limit_store

logger = logging.getLogger("agentflow.fleet")


def announce(member: str, slots: int) -> None:
    """Count this process (``member``, ``slots`` tasks at once) for the next lease."""
    limit_store().announce(member, slots, conf.setting("LEASE_SECONDS"))


def slots() -> int | None:
    """Tasks the live fleet runs at once, or None when unknown (no Redis, or it is down)."""
    try:
        return limit_store().fleet_slots() or None
    except (redis.RedisError, OSError) as exc:
        logger.warning("cannot count the worker fleet (%s); fan-outs use FAN_OUT_TASKS", exc)
        return None
