"""The names a call goes by outside its row: its idempotency key and its place in a queue.

Both travel as text (to a tool, through Redis) and are read back here, in one place, so
what builds them and what splits them cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CallKey:
    """A call's idempotency key: ``<run id>:<position>``, ``:<index>`` for a fan-out child.

    Stable across retries and replays, so a tool given it can refuse a second side effect.
    A fork keeps its copied steps' keys: they name the calls that made the effects.
    """

    run_id: str
    position: int
    index: int | None = None

    def __str__(self) -> str:
        child = "" if self.index is None else f":{self.index}"
        return f"{self.run_id}:{self.position}{child}"

    @classmethod
    def parse(cls, text: str) -> CallKey:
        """Read a stored key back (``ValueError`` if it is not one)."""
        run_id, position, *index = text.split(":")
        if len(index) > 1:
            raise ValueError(f"not a call key: {text!r}")
        return cls(run_id, int(position), int(index[0]) if index else None)


@dataclass(frozen=True)
class Waiter:
    """Who waits in a concurrency cap's queue: a run's advance, or a fan-out child's step."""

    run_id: str | None = None
    step_id: int | None = None
    tool: str = ""

    @classmethod
    def run(cls, run_id: Any) -> Waiter:
        return cls(run_id=str(run_id))

    @classmethod
    def child(cls, step_id: int, tool: str) -> Waiter:
        return cls(step_id=step_id, tool=tool)

    def __str__(self) -> str:
        if self.step_id is not None:
            return f"{CHILD_PREFIX}{self.step_id}:{self.tool}"
        return f"{RUN_PREFIX}{self.run_id}"

    @classmethod
    def parse(cls, text: str) -> Waiter | None:
        """Read back what ``str`` wrote; None for anything else (nothing to wake)."""
        if text.startswith(RUN_PREFIX) and len(text) > len(RUN_PREFIX):
            return cls.run(text.removeprefix(RUN_PREFIX))
        step_id, _, tool = text.removeprefix(CHILD_PREFIX).partition(":")
        if text.startswith(CHILD_PREFIX) and step_id.isdigit():
            return cls.child(int(step_id), tool)
        return None


RUN_PREFIX, CHILD_PREFIX = "run:", "step:"
