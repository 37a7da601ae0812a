"""Compare two runs position by position: what a fork changed against its parent.

Values are compared and shown as stored (redacted); sealed real values never leave the
database here. A fan-out is compared child by child, and summarised: counts by status on
each side, and the differing children (up to ``CHILD_LIMIT`` of them) with their values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from agentflow.models import Run, Step

CHILD_LIMIT = 50


@dataclass(frozen=True)
class StepSide:
    """One run's step at a position: what it was and how it ended."""

    kind: str
    name: str
    status: str
    args: Any
    output: Any
    error: Any


@dataclass(frozen=True)
class ChildDifference:
    """A fan-out child whose call or outcome differs (None: that side has no such child)."""

    index: int
    a: StepSide | None
    b: StepSide | None
    args_equal: bool
    outputs_equal: bool


@dataclass(frozen=True)
class ChildrenComparison:
    """Both sides of a fan-out: counts by status, and the children that differ."""

    count_a: int
    count_b: int
    statuses_a: dict[str, int]
    statuses_b: dict[str, int]
    differing: int
    differences: list[ChildDifference]  # the first CHILD_LIMIT of them, by index


@dataclass(frozen=True)
class StepComparison:
    """One position in both runs (``a`` or ``b`` is None where that run has no step)."""

    position: int
    a: StepSide | None
    b: StepSide | None
    same_call: bool  # kind, name and arguments agree: replay of one would accept the other
    args_equal: bool
    outputs_equal: bool  # output and error (a fan-out: every child's)
    children: ChildrenComparison | None = None

    @property
    def equal(self) -> bool:
        statuses = (self.a.status if self.a else None) == (self.b.status if self.b else None)
        return self.same_call and self.outputs_equal and statuses


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side; ``first_difference`` is the first position that differs."""

    a: UUID
    b: UUID
    agents: tuple[str, str]
    statuses: tuple[str, str]
    input_equal: bool
    output_equal: bool
    steps: list[StepComparison] = field(default_factory=list)
    first_difference: int | None = None  # computed once: templates read it per row

    @property
    def equal(self) -> bool:
        return self.input_equal and self.output_equal and self.first_difference is None


COLUMNS = ("position", "index", "kind", "name", "status", "args", "args_hash", "output", "error")


def compare(a: Run, b: Run) -> RunComparison:
    """Compare run ``a`` with run ``b`` (one query per run, whatever its size)."""
    top_a, children_a = _steps(a.id)
    top_b, children_b = _steps(b.id)
    steps = []
    for position in sorted(set(top_a) | set(top_b)):
        row_a, row_b = top_a.get(position), top_b.get(position)
        kids = None
        if position in children_a or position in children_b:
            kids = _children(children_a.get(position, {}), children_b.get(position, {}))
        steps.append(_position(position, row_a, row_b, kids))
    return RunComparison(
        a=a.id,
        b=b.id,
        agents=(a.agent, b.agent),
        statuses=(a.status, b.status),
        input_equal=a.input == b.input,
        output_equal=(a.output, a.error) == (b.output, b.error),
        steps=steps,
        first_difference=next((s.position for s in steps if not s.equal), None),
    )


Rows = dict[int, dict[str, Any]]


def _steps(run_id: UUID) -> tuple[Rows, dict[int, Rows]]:
    top: Rows = {}
    children: dict[int, Rows] = {}
    for row in Step.objects.filter(run_id=run_id).order_by().values(*COLUMNS):
        if row["index"] is None:
            top[row["position"]] = row
        else:
            children.setdefault(row["position"], {})[row["index"]] = row
    return top, children


def _side(row: dict[str, Any] | None) -> StepSide | None:
    if row is None:
        return None
    return StepSide(
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        args=row["args"],
        output=row["output"],
        error=row["error"],
    )


def _args_equal(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    # The hash covers the real arguments; stored ones may be redacted alike yet differ.
    if a["args_hash"] and b["args_hash"]:
        return a["args_hash"] == b["args_hash"]
    return a["args"] == b["args"]


def _outputs_equal(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a["output"], a["error"]) == (b["output"], b["error"])


def _position(
    position: int,
    a: dict[str, Any] | None,
    b: dict[str, Any] | None,
    children: ChildrenComparison | None,
) -> StepComparison:
    args_equal = _args_equal(a, b)
    outputs_equal = _outputs_equal(a, b) and (children is None or children.differing == 0)
    same_call = (
        a is not None
        and b is not None
        and (a["kind"], a["name"]) == (b["kind"], b["name"])
        and args_equal
    )
    return StepComparison(
        position=position,
        a=_side(a),
        b=_side(b),
        same_call=same_call,
        args_equal=args_equal,
        outputs_equal=outputs_equal,
        children=children,
    )


def _children(a: Rows, b: Rows) -> ChildrenComparison:
    differences = []
    differing = 0
    for index in sorted(set(a) | set(b)):
        row_a, row_b = a.get(index), b.get(index)
        args_equal = _args_equal(row_a, row_b)
        outputs_equal = _outputs_equal(row_a, row_b)
        statuses = (row_a or {}).get("status") == (row_b or {}).get("status")
        if args_equal and outputs_equal and statuses:
            continue
        differing += 1
        if len(differences) < CHILD_LIMIT:
            differences.append(
                ChildDifference(index, _side(row_a), _side(row_b), args_equal, outputs_equal)
            )
    return ChildrenComparison(
        count_a=len(a),
        count_b=len(b),
        statuses_a=dict(Counter(row["status"] for row in a.values())),
        statuses_b=dict(Counter(row["status"] for row in b.values())),
        differing=differing,
        differences=differences,
    )
