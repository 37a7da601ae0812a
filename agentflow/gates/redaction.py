"""Redaction: secrets are replaced before anything is stored or published.

Patterns come from ``AGENTFLOW["REDACT"]`` (API keys, bearer tokens and email addresses by
default: ``agentflow.conf.DEFAULT_REDACT``) and from the ``redact`` lines of enabled Policy
rows. They are matched against every string in a value, keys included. The hot path pays
one regex search over the JSON text; only a value that matches is walked and rewritten.

Where a value the runtime needs again changed (a run's input, a step's output, a fan-out
child's arguments, signal and decision data), the real JSON is kept sealed beside it
(``agentflow.gates.sealing``): tools get the real arguments, and agents the real values on
the first execution and on every replay alike.
"""

from __future__ import annotations

import json
import re
import time
from functools import lru_cache
from typing import Any

from agentflow import conf

REPLACEMENT = "[redacted]"


@lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


# Redaction runs several times per step, so its patterns are kept for at least a second
# even when POLICY_CACHE_SECONDS is 0 (saves in this process clear them at once).
MIN_CACHE_SECONDS = 1.0
_cache: dict[str, Any] = {"at": float("-inf"), "pattern": None}


def _pattern() -> re.Pattern[str] | None:
    from agentflow.gates.policy import enabled_policies

    now = time.monotonic()
    if now - _cache["at"] > max(conf.setting("POLICY_CACHE_SECONDS"), MIN_CACHE_SECONDS):
        patterns = list(conf.setting("REDACT"))
        for policy in enabled_policies():
            patterns += policy.redact_patterns
        _cache["pattern"] = _compile(tuple(patterns))
        _cache["at"] = now
    return _cache["pattern"]


@conf.on_reload
def clear_cache(**kwargs: Any) -> None:
    """Forget the combined patterns (on Policy saves and deletes in this process, and settings)."""
    _cache["at"] = float("-inf")


def redact_text(text: str) -> str:
    """``text`` with every match of a redaction pattern replaced."""
    pattern = _pattern()
    return text if pattern is None else pattern.sub(REPLACEMENT, text)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every matching string (and key) redacted."""
    pattern = _pattern()
    return value if pattern is None else _walk(value, pattern)


def _walk(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_walk(k, pattern): _walk(v, pattern) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, pattern) for v in value]
    return value


def redact_json(text: str | None) -> str | None:
    """The JSON text with its strings redacted; the same text when nothing matches."""
    if text is None:
        return None
    pattern = _pattern()
    if pattern is None or not pattern.search(text):
        return text
    return json.dumps(_walk(json.loads(text), pattern), separators=(",", ":"), ensure_ascii=True)


def changes(text: str) -> bool:
    """Whether redaction would change this JSON text (its real value must be sealed)."""
    return redact_json(text) != text
