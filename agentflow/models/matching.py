"""Glob patterns on tool and agent names, as Policy rows use them."""

from __future__ import annotations

import fnmatch
import re

ALLOWED = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]*$")


def validate_glob(pattern: str) -> None:
    """Raise ``ValueError`` for a pattern that is not a sensible name glob."""
    if not ALLOWED.match(pattern):
        raise ValueError(
            f"{pattern!r} may only use letters, digits, '_', '-', '.', and the glob "
            "characters '*', '?' and '[...]'"
        )
    if pattern.count("[") != pattern.count("]"):
        raise ValueError(f"{pattern!r} has an unclosed '[' in its character class")


def matches(pattern: str, name: str) -> bool:
    """True when ``name`` matches the glob (a blank pattern matches everything)."""
    return not pattern or fnmatch.fnmatchcase(name, pattern)
