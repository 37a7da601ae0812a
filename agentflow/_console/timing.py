"""A schedule's timing in words: "every 30 seconds", "at 09:00 on Monday to Friday".

Intervals are always described. Crontabs are described for the common 5-field forms (one
time a day, lists of hours, steps of minutes, ranges and lists of weekdays, days of the
month, months); anything else falls back to the raw crontab, which is never wrong.
"""

from __future__ import annotations

import re
from typing import Any

DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)  # fmt: skip
DAY_NAMES = {name[:3].lower(): index for index, name in enumerate(DAYS)}
MONTH_NAMES = {name[:3].lower(): index + 1 for index, name in enumerate(MONTHS)}
UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))
NUMBER = re.compile(r"[0-9]{1,2}")
STEP = re.compile(r"\*/([0-9]{1,2})")


class Unsupported(ValueError):
    """A crontab field this describer does not put into words."""


def describe(task: Any) -> str:
    """The timing of a PeriodicTask in words; "-" when it has neither interval nor crontab."""
    if task.interval_id is not None:
        return every(task.interval.every, task.interval.period)
    if task.crontab_id is not None:
        cron = task.crontab
        return crontab(
            cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week
        )
    return "-"


def every(count: int, period: str = "seconds") -> str:
    """ "every 30 seconds", "every minute", "every 2 hours" (whole larger units win)."""
    seconds = count * {"days": 86400, "hours": 3600, "minutes": 60}.get(period, 1)
    for size, unit in UNITS:
        if seconds % size == 0:
            n = seconds // size
            return f"every {unit}" if n == 1 else f"every {n:,} {unit}s"
    return f"every {seconds} seconds"  # pragma: no cover (1 divides everything)


def crontab(minute: str, hour: str, day_of_month: str, month: str, day_of_week: str) -> str:
    """A 5-field crontab in words, or ``crontab <fields>`` when it is not a common form."""
    raw = f"crontab {minute} {hour} {day_of_month} {month} {day_of_week}"
    try:
        parts = [_time(minute, hour)]
        if day_of_month != "*":
            days = _list(day_of_month, 1, 31, str)
            parts.append(f"on day {days} of the month")
        if month != "*":
            parts.append(f"in {_list(month, 1, 12, lambda m: MONTHS[m - 1], MONTH_NAMES)}")
        if day_of_week != "*":
            parts.append(f"on {_list(day_of_week, 0, 7, lambda d: DAYS[d % 7], DAY_NAMES)}")
    except Unsupported:
        return raw
    if len(parts) == 1 and parts[0].startswith("at "):
        parts.append("every day")
    return " ".join(parts)


def _time(minute: str, hour: str) -> str:
    if minute == "*" and hour == "*":
        return "every minute"
    step = STEP.fullmatch(minute)
    if step and hour == "*":
        n = _number(step[1], 1, 59)
        return "every minute" if n == 1 else f"every {n} minutes"
    if NUMBER.fullmatch(minute):
        m = _number(minute, 0, 59)
        if hour == "*":
            return f"every hour at minute {m}"
        hours = [_number(h, 0, 23) for h in hour.split(",")]
        return "at " + _and([f"{h:02d}:{m:02d}" for h in hours])
    raise Unsupported(minute)


def _list(text: str, low: int, high: int, name: Any, names: dict[str, int] | None = None) -> str:
    """ "1-5" as "Monday to Friday", "1,3" as "Monday and Wednesday"."""
    words = []
    for item in text.split(","):
        ends = item.split("-")
        if len(ends) > 2:
            raise Unsupported(item)
        values = [_number(end, low, high, names) for end in ends]
        words.append(" to ".join(name(value) for value in values))
    return _and(words)


def _number(text: str, low: int, high: int, names: dict[str, int] | None = None) -> int:
    text = text.strip().lower()
    if names and text in names:
        return names[text]
    if not NUMBER.fullmatch(text) or not low <= int(text) <= high:
        raise Unsupported(text)
    return int(text)


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
