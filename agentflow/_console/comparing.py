"""The compare page's summary: where two runs differ, and which positions to show.

By default only differing positions are shown; each stretch of equal positions between
them becomes one line ("positions 3-41: the same in both runs"). ``?all=1`` shows every
position. One pass over the comparison, whatever the runs' length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentflow._engine.compare import RunComparison, StepComparison


@dataclass(frozen=True)
class Same:
    """A stretch of positions that are equal in both runs, shown as one line."""

    first: int
    last: int
    count: int
    is_same = True  # tells the template this row from a StepComparison


@dataclass(frozen=True)
class Summary:
    """What the compare page opens with, and the rows it shows."""

    total: int
    differing: int
    first_difference: int | None
    show_all: bool
    rows: list[StepComparison | Same] = field(default_factory=list)

    @property
    def hidden(self) -> int:
        return 0 if self.show_all else self.total - self.differing


def summarize(comparison: RunComparison, *, show_all: bool = False) -> Summary:
    """Count the differing positions and list the rows to show."""
    rows: list[StepComparison | Same] = []
    differing = 0
    stretch: list[int] = []

    def close() -> None:
        if stretch:
            rows.append(Same(stretch[0], stretch[-1], len(stretch)))
            stretch.clear()

    for step in comparison.steps:
        if not step.equal:
            differing += 1
        if show_all or not step.equal:
            close()
            rows.append(step)
        else:
            stretch.append(step.position)
    close()
    return Summary(
        total=len(comparison.steps),
        differing=differing,
        first_difference=comparison.first_difference,
        show_all=show_all,
        rows=rows,
    )
