"""Percentiles of a duration over a queryset, computed by the database.

PostgreSQL answers every fraction in one query and one sort with ``percentile_cont``. SQLite has no
ordered-set aggregates, so there each fraction reads the two rows around its rank
(``ORDER BY duration LIMIT 2 OFFSET k``) after one count, and interpolates between them
as ``percentile_cont`` does: a fixed number of queries, never the whole column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.models import Aggregate, Count, DurationField, Expression, QuerySet


class PercentileCont(Aggregate):
    """Element ``index`` of ``percentile_cont(ARRAY[fractions]) WITHIN GROUP (ORDER BY e)``.

    Every element names the same aggregate, which PostgreSQL computes once: one sort for
    all the fractions (one ``percentile_cont`` per fraction sorts the rows once each).
    """

    function = "percentile_cont"
    name = "PercentileCont"
    template = (
        "(%(function)s(ARRAY[%(fractions)s]) WITHIN GROUP (ORDER BY %(expressions)s))[%(at)s]"
    )

    def __init__(self, expression: Any, fractions: Sequence[float], index: int, **extra: Any):
        for fraction in fractions:
            if not 0 <= float(fraction) <= 1:
                raise ValueError(f"a percentile's fraction is from 0 to 1, not {fraction}")
        listed = ", ".join(repr(float(f)) for f in fractions)
        super().__init__(
            expression, fractions=listed, at=int(index) + 1, output_field=DurationField(), **extra
        )


def durations(
    rows: QuerySet, duration: Expression, fractions: Sequence[float]
) -> tuple[int, list[timedelta | None]]:
    """(how many rows, the duration at each fraction) over ``rows`` (None when empty)."""
    rows = rows.order_by()
    if connections[rows.db].vendor == "postgresql":
        named = {f"p{i}": PercentileCont(duration, fractions, i) for i in range(len(fractions))}
        found = rows.aggregate(n=Count("pk"), **named)
        return found["n"], [found[f"p{i}"] for i in range(len(fractions))]
    n = rows.count()
    if not n:
        return 0, [None for _ in fractions]
    ordered = (
        rows.annotate(duration=duration).order_by("duration").values_list("duration", flat=True)
    )
    values = []
    for fraction in fractions:
        rank = fraction * (n - 1)
        low = math.floor(rank)
        pair = list(ordered[low : low + 2])
        high = pair[1] if len(pair) > 1 else pair[0]
        values.append(pair[0] + (high - pair[0]) * (rank - low))
    return n, values
