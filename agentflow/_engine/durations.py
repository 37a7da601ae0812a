"""Seconds that agent code hands to a timer: a sleep, a signal wait, an approval timeout.

Checked before the call takes its position, so a value no timer can hold fails the run
with a message naming the limit instead of an ``OverflowError`` on every replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from agentflow.exceptions import InvalidInput

# About a century: far inside what Python datetimes and every database can hold.
MAX_SECONDS = 100 * 365 * 24 * 3600


def check_seconds(value: Any, what: str | Callable[[], str]) -> float:
    """Return ``value`` if it is a number of seconds within ±MAX_SECONDS, else refuse it.

    ``what`` names the value in the refusal; a callable is only called then (on every
    replayed position, formatting a run id would cost more than the check).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or abs(value) > MAX_SECONDS
    ):
        named = what() if callable(what) else what
        raise InvalidInput(
            f"{named}: {value!r} is not a number of seconds from 0 to {MAX_SECONDS:,} "
            "(about 100 years). Use ctx.wait_for with a signal for an open-ended wait."
        )
    return value
