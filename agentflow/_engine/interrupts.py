"""The runtime's own control flow, kept out of reach of ``except Exception``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from django.db import DatabaseError, IntegrityError

from agentflow._guardrails.limit_hit import LimitHit
from agentflow.exceptions import RedactionUnavailable


class Interrupt(BaseException):
    """Base of the runtime's control-flow exceptions (like DBOS's cancellation)."""


class Suspend(Interrupt):
    """The run must wait: unwind the agent, record why, release the lease."""

    def __init__(self, reason: str, wake_at: datetime | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wake_at = wake_at


class LeaseLost(Interrupt):
    """Another worker took the run, or it was cancelled: stop without writing anything."""


class StoreUnavailable(Interrupt):
    """The database failed under the engine (not under user code), or a redaction pattern
    cannot be compiled (nothing may be stored until it is fixed): retry later, fail nothing.

    Deriving from ``BaseException`` keeps a dropped connection from being mistaken for the
    agent's own failure; the lease expires and the reconciler advances the run again.
    """


class Pause(Interrupt):
    """A guardrail (budget, loop guard, duration) stops the run until an operator resumes it.

    Raised before the step it guards starts, so no step is half-executed.
    """

    def __init__(self, hit: LimitHit) -> None:
        super().__init__(hit.reason)
        self.hit = hit


@contextlib.contextmanager
def unavailable_as_interrupt(doing: str = "recording a step") -> Iterator[None]:
    """Turn database failures other than constraint violations into ``StoreUnavailable``,
    and so a redaction pattern that cannot compile (redaction fails closed)."""
    try:
        yield
    except IntegrityError:
        raise
    except DatabaseError as exc:
        raise StoreUnavailable(f"the database failed while {doing}: {exc}") from exc
    except RedactionUnavailable as exc:
        raise StoreUnavailable(f"nothing can be stored while {doing}: {exc}") from exc
