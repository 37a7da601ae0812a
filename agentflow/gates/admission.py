"""Admit a tool call now, or say when: the rate-limit and concurrency gates together.

A call over its limit is never polled for: it gets the exact time of its booked rate
slot, or (for a full concurrency cap) a place in the waiters' queue plus a fallback
time at which the oldest slot's lease runs out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from agentflow import conf
from agentflow.gates.limits import Limits
from agentflow.gates.stores import limit_store

# A booked slot this close is taken now rather than scheduled (the window guard covers it).
NOW_ENOUGH = 0.005


@dataclass(frozen=True)
class Admission:
    """``delay`` 0 means go now (holding ``slot`` if a concurrency slot was taken)."""

    delay: float = 0.0
    slot: str | None = None
    rate_booked: bool = False
    reason: str = ""


def admit(limits: Limits, *, member: str, rate_booked: bool, waiter: str) -> Admission:
    """Pass the rate gate (unless a slot was booked already), then the concurrency gate."""
    store = limit_store()
    if limits.rate and not rate_booked:
        count, period = limits.rate
        window = period + conf.setting("RATE_LIMIT_GUARD_SECONDS")
        delay = store.reserve(limits.key, count, window, member)
        if delay > NOW_ENOUGH:
            return Admission(
                delay=delay,
                rate_booked=True,
                reason=f"rate limit {count}/{period}s on {limits.key}: slot booked in {delay:.3f}s",
            )
    if limits.concurrency:
        refused = store.acquire(
            limits.key, limits.concurrency, member, conf.setting("LEASE_SECONDS"), waiter
        )
        if refused is not None:
            return Admission(
                delay=max(refused.retry_in, NOW_ENOUGH),
                reason=f"{limits.concurrency} concurrent calls of {limits.key} already run; "
                "queued for the next free slot",
            )
        return Admission(slot=member)
    return Admission()


def release(limits: Limits, slot: str | None) -> list[str]:
    """Give a concurrency slot back; return the waiters to wake (``step:<id>``/``run:<id>``)."""
    if slot is None or not limits.concurrency:
        return []
    return limit_store().release(limits.key, limits.concurrency, slot)


class SlotLease:
    """A held concurrency slot, renewed by the heartbeat thread while the call runs."""

    def __init__(self, limits: Limits, slot: str) -> None:
        self.limits, self.slot = limits, slot
        self.lost = threading.Event()

    def renew(self) -> bool:
        return limit_store().renew(self.limits.key, self.slot, conf.setting("LEASE_SECONDS"))
