"""The worker fleet as a whole: how many tasks it runs at once, and whose turn it is.

Every worker process announces itself from its heartbeat thread (a prefork child as one
slot, a thread pool as its concurrency) and is counted for one lease after its last
announcement, so a process that died drops out by itself. A fan-out sizes its header
tasks by it. Without Redis the census is unknown (None): each process sees only itself.

Work that every process offers to do on a timer, but that the fleet needs done once per
period (the reconciler's pass), takes a turn first (``take_turn``).
"""

from __future__ import annotations

import logging

import redis

from agentflow import conf
from agentflow._guardrails.stores import limit_store

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


def take_turn(name: str, seconds: float) -> bool:
    """True for one process of the fleet per ``seconds`` (per process without Redis).

    When the store cannot answer, True: doing the work twice is better than not at all.
    """
    try:
        return limit_store().take_turn(f"{name}:{seconds:g}", seconds)
    except (redis.RedisError, OSError):
        return True
