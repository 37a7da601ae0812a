"""Admit a tool call now, or say when: the rate-limit and concurrency gates together.

A call over its limit is never polled for: it gets the exact time of its booked rate
slot, or (for a full concurrency cap) a place in the waiters' queue plus a fallback
time at which the oldest slot's lease runs out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from agentflow import conf
from agentflow.gates.limits import Limits
from agentflow.gates.stores import limit_store

# A slot this close is waited for in place: less than one message round trip.
NOW_ENOUGH = 0.005


@dataclass(frozen=True)
class Admission:
    """``delay`` 0 means go now (holding ``slot`` if a concurrency slot was taken)."""

    delay: float = 0.0
    slot: str | None = None
    rate_booked: bool = False
    reason: str = ""


def admit(limits: Limits, *, member: str, booked: datetime | None, waiter: str) -> Admission:
    """Pass the rate gate (keeping a slot booked earlier), then the concurrency gate.

    A booked slot is kept only if the call starts within RATE_LIMIT_GUARD_SECONDS of it:
    a call that starts later could crowd the calls after it into one window, so it books
    a new slot instead. Calls therefore start no closer than period / N apart, give or
    take the guard, and no window of the period sees more than N starts.
    """
    store = limit_store()
    guard = conf.setting("RATE_LIMIT_GUARD_SECONDS")
    if limits.rate:
        late = None if booked is None else (timezone.now() - booked).total_seconds()
        if late is not None and late < 0:
            time.sleep(-late)  # woken a hair early (at most NOW_ENOUGH): start on the slot
        elif late is None or late > guard:
            count, period = limits.rate
            delay = store.reserve(limits.key, (period + guard) / count)
            if delay > NOW_ENOUGH:
                return Admission(
                    delay=delay,
                    rate_booked=True,
                    reason=f"rate limit {count}/{period}s on {limits.key}: "
                    f"slot booked in {delay:.3f}s",
                )
            time.sleep(delay)
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


def sweep() -> list[str]:
    """Waiters admitted by slots whose holders died (see ``BaseLimitStore.sweep``)."""
    return limit_store().sweep()


class SlotLease:
    """A held concurrency slot, renewed by the heartbeat thread while the call runs."""

    def __init__(self, limits: Limits, slot: str) -> None:
        self.limits, self.slot = limits, slot
        self.lost = threading.Event()

    def renew(self) -> bool:
        return limit_store().renew(self.limits.key, self.slot, conf.setting("LEASE_SECONDS"))
