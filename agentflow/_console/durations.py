"""Durations and times as a person reads them: "1.3 ms", "4 min 2 s", "3 min ago".

Pages are rendered (and re-rendered live) on the server, so relative times are computed
here, against this server's clock (display needs no database round trip), with the exact
time kept for the hover title.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def seconds_of(value: timedelta | float | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def human(value: timedelta | float | int | None) -> str:
    """A duration in its two largest units: "1.3 ms", "4.2 s", "4 min 2 s", "2 h 5 min"."""
    seconds = seconds_of(value)
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + human(-seconds)
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        millis = seconds * 1000
        return f"{millis:.1f} ms" if millis < 10 else f"{millis:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    parts = []
    for size, unit in UNITS:
        if whole >= size or parts:
            parts.append((whole // size, unit))
            whole %= size
        if len(parts) == 2:
            break
    first, *rest = parts
    words = [f"{first[0]} {first[1]}"]
    if rest and rest[0][0]:
        words.append(f"{rest[0][0]} {rest[0][1]}")
    return " ".join(words)


def ago(moment: datetime, now: datetime | None = None) -> str:
    """``moment`` relative to now, in its largest unit: "3 min ago", "in 2 h", "just now"."""
    seconds = ((now or timezone.now()) - moment).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    whole = int(abs(seconds))
    size, unit = next((s, u) for s, u in UNITS if whole >= s)
    text = f"{whole // size} {unit}"
    return f"{text} ago" if seconds > 0 else f"in {text}"


def exact(moment: datetime) -> str:
    """The exact time in the current time zone, as the console writes it."""
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    return local.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def time_tag(moment: datetime | None, now: datetime | None = None) -> SafeString | str:
    """``<time datetime=… title=exact>3 min ago</time>``, or "-" without a time."""
    if moment is None:
        return "-"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        exact(moment),
        ago(moment, now),
    )
