"""Time on a chart: a time span as pixels, nice tick steps, and durations in words.

Shared by the run waterfall and the overview page. Pure functions: no queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agentflow._console import durations

# Tick steps a person reads at a glance, in seconds.
NICE_STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400,
)  # fmt: skip


def human(seconds: float) -> str:
    """A duration in words (``durations.human``), and "0 s" for the origin of an axis."""
    return "0 s" if seconds == 0 else durations.human(seconds)


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Axis:
    """Maps [start, end] onto [left, right] pixels."""

    start: datetime
    end: datetime
    left: float
    right: float

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.001)

    def x(self, at: datetime) -> float:
        """The pixel of ``at``, clipped to the axis."""
        offset = (at - self.start).total_seconds() / self.seconds
        return self.left + min(max(offset, 0.0), 1.0) * (self.right - self.left)

    def span(self, start: datetime, end: datetime, minimum: float = 1.0) -> tuple[float, float]:
        """(x, width) of [start, end]; at least ``minimum`` pixels wide, so a blip shows."""
        x0, x1 = self.x(start), self.x(end)
        width = max(x1 - x0, minimum)
        return min(x0, self.right - width), width

    def ticks(self, most: int = 8) -> list[Tick]:
        """Ticks at a nice step, labelled with the time since the start."""
        step = next((s for s in NICE_STEPS if self.seconds / s <= most), NICE_STEPS[-1])
        ticks, n = [], 0
        while n * step <= self.seconds + 1e-9:
            ticks.append(Tick(self.x(self.start + timedelta(seconds=n * step)), human(n * step)))
            n += 1
        return ticks
