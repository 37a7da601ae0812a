"""Which guardrail stopped a run, as data: recorded with the pause, read back by resume.

The sentence a person reads (``reason``) is made from it, never parsed back into it:
resume looks the row up by id and compares the limit as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

BUDGET, POLICY = "budget", "policy"
MAX_STEPS, MAX_DURATION = "max_steps", "max_duration"


@dataclass(frozen=True)
class LimitHit:
    """A Budget or Policy row (by id) whose limit stopped a run, and the sentence saying so.

    ``limit``: a budget's dimension (``cost``, ``tokens``, ...), or a policy's
    ``max_steps`` or ``max_duration``. ``need``: what the stopped step needs of a budget;
    ``position``: where a loop guard stopped the run.
    """

    kind: str
    row_id: int
    limit: str
    reason: str
    need: Decimal | None = None
    position: int | None = None

    def as_data(self) -> dict[str, Any]:
        """JSON for the ``run.paused`` event (the reason is in the event already)."""
        data: dict[str, Any] = {"kind": self.kind, "id": self.row_id, "limit": self.limit}
        if self.need is not None:
            data["need"] = str(self.need)
        if self.position is not None:
            data["position"] = self.position
        return data

    @classmethod
    def from_data(cls, data: Any, reason: str = "") -> LimitHit | None:
        """Read back what ``as_data`` wrote; None for anything else (an older pause)."""
        if not isinstance(data, dict) or data.get("kind") not in (BUDGET, POLICY):
            return None
        row_id, limit, position = data.get("id"), data.get("limit"), data.get("position")
        if not isinstance(row_id, int) or not isinstance(limit, str):
            return None
        try:
            need = Decimal(data["need"]) if "need" in data else None
        except (InvalidOperation, TypeError):
            return None
        if need is not None and not need.is_finite():
            return None
        if position is not None and not isinstance(position, int):
            return None
        return cls(data["kind"], row_id, limit, reason, need, position)
