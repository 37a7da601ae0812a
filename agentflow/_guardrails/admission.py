"""Admit a tool call now, or say when: the rate-limit and concurrency gates together.

A call over its limit is never polled for: it gets the exact time of its booked rate
slot, or (for a full concurrency cap) a place in the waiters' queue plus a fallback
time at which the oldest slot's lease runs out.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from agentflow import conf
from agentflow._guardrails.limits import Limits
from agentflow._guardrails.stores import limit_store
from agentflow.models import clock

# A slot this close is waited for in place (a few milliseconds, less than a message round
# trip); a call scheduled for a slot is woken EARLY before it so it starts on time.
NOW_ENOUGH = 0.02
EARLY = 0.01
# Slots booked for a fan-out's children start this far ahead: about a message's trip from
# the commit to a worker, so the first child is not late for its slot.
LEAD = 0.05


@dataclass(frozen=True)
class Admission:
    """``delay`` 0 means go now (holding ``slot`` if a concurrency slot was taken).

    Otherwise come back at ``wake_at``; ``booked`` is the rate-limit slot reserved for the
    call, if any, which it keeps when it comes back on time.
    """

    delay: float = 0.0
    slot: str | None = None
    booked: datetime | None = None
    reason: str = ""

    @property
    def wake_at(self) -> datetime:
        if self.booked is not None:
            return self.booked - timedelta(seconds=EARLY)
        return clock.now() + timedelta(seconds=self.delay)


def admit(limits: Limits, *, member: str, booked: datetime | None, waiter: str) -> Admission:
    """Pass the rate gate (keeping a slot booked earlier), then the concurrency gate.

    Slots are spaced (period + guard) / N apart. A booked slot is kept only if the call
    comes back less than half the guard late; later, it could crowd the calls after it into
    one window, so it books a new slot. The other half of the guard absorbs the jitter
    between admission and the tool's first line, so no window of the period sees more
    than N starts.
    """
    store = limit_store()
    guard = conf.setting("RATE_LIMIT_GUARD_SECONDS")
    if limits.rate:
        late = None if booked is None else (clock.now() - booked).total_seconds()
        if late is not None and late < 0:
            time.sleep(min(-late, NOW_ENOUGH))  # woken just before the slot: start on it
        elif late is None or late > guard / 2:
            count, period = limits.rate
            delay = store.reserve(limits.key, (period + guard) / count)
            if delay > NOW_ENOUGH:
                return Admission(
                    delay=delay,
                    booked=clock.now() + timedelta(seconds=delay),
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


def book(limits: Limits, count: int) -> list[datetime]:
    """Book ``count`` consecutive rate slots at once, in order: a fan-out's children.

    Each child then comes back at its own slot and is claimed once, instead of being
    claimed, refused and handed back one at a time while its siblings' slots come due.
    Empty when the limits have no rate.
    """
    if not limits.rate or count <= 0:
        return []
    calls, period = limits.rate
    interval = (period + conf.setting("RATE_LIMIT_GUARD_SECONDS")) / calls
    delay = limit_store().reserve(limits.key, interval, count, LEAD)
    first = clock.now() + timedelta(seconds=delay)
    return [first + timedelta(seconds=interval * i) for i in range(count)]


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
