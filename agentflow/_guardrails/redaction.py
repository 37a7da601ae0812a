"""Redaction: secrets are replaced before anything is stored or published.

Patterns come from ``AGENTFLOW["REDACT"]`` (API keys, bearer tokens and email addresses by
default: ``agentflow.conf.DEFAULT_REDACT``) and from the ``redact`` lines of enabled Policy
rows; the literal values of the model API keys ``AGENTFLOW["LLM"]`` configures are added
(a key of another shape than ``sk-`` would pass the patterns). They are matched against
every string in a value, keys included.

Where a value the runtime needs again changed (a run's input, a step's output, a fan-out
child's arguments, signal and decision data), the real JSON is kept sealed beside it
(``agentflow._guardrails.sealing``): tools get the real arguments, and agents the real values on
the first execution and on every replay alike.

Cost: linear in the value, whatever the patterns. A payload is attacker-controlled (a tool
output, a reviewer's comment), so the patterns are matched with RE2, which never
backtracks (``agentflow.models.patterns`` refuses the syntax that needs backtracking). A
value's strings are joined and scanned once; only strings a match touches are rewritten.
Each match costs a few microseconds more, so after MAX_MATCHES matches in one value the
rest of it, from the next match on, is replaced whole. A 1 MB payload redacts in a few
milliseconds (``python -m bench.redaction``, goal 20 ms); RE2 releases the GIL while it
scans, so the heartbeat thread keeps renewing leases meanwhile. Recorded values are
redacted once, when they are recorded: replay reads them back as stored.

Fail closed: a pattern RE2 cannot match as written (one saved around the Policy form's
validation, or settings deployed without ``manage.py check``) raises
``RedactionUnavailable``, and nothing is stored or published. Skipping the pattern would
store the secrets it names; redacting whole strings instead would rename step names and
keys in a history that must still match the code once the pattern is fixed. The engine
retries the run later, as after a database outage.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from itertools import count
from typing import Any

from agentflow import conf
from agentflow.exceptions import RedactionUnavailable, UnknownModel
from agentflow.models import patterns as syntax

REPLACEMENT = "[redacted]"
# Matches in one value after which the rest of it is replaced whole (see the docstring).
# A value with more is a listing of secrets or a payload built to be slow to redact.
MAX_MATCHES = 1_000
# Joins a value's strings for one scan; a match that runs across it is redone per string.
SEPARATOR = "\x00"


class Patterns:
    """The combined patterns: one RE2 object, and whether strings must be scanned alone."""

    def __init__(self, sources: tuple[tuple[str, str], ...]) -> None:
        for pattern, where in sources:
            if syntax.unusable(pattern):
                raise RedactionUnavailable(
                    f"The redaction pattern on {where} is not one RE2 can match as written, "
                    "so nothing is stored or published until it is fixed; `manage.py check` "
                    "(for settings) or the Policy's admin form says why."
                )
        combined = "|".join(f"(?:{pattern})" for pattern, _ in sources)
        try:
            self.regex = syntax.compile_pattern(combined)
        except syntax.Error as exc:  # each compiles alone; together they may be too big
            raise RedactionUnavailable(
                f"The {len(sources)} redaction patterns together cannot be compiled by RE2 "
                f"({exc}), so nothing is stored or published until some are removed or made "
                "narrower (AGENTFLOW['REDACT'] and the Policy rows' redact lines)."
            ) from None
        # ^ $ \A \z see the edges of each string, which a joined scan would not show them.
        self.alone = any(syntax.asserts_text_edges(pattern) for pattern, _ in sources)


@lru_cache(maxsize=64)
def _compile(sources: tuple[tuple[str, str], ...]) -> Patterns | None:
    return Patterns(sources) if sources else None


# Redaction runs several times per step, so its patterns are kept for at least a second
# even when POLICY_CACHE_SECONDS is 0 (saves in this process clear them at once).
MIN_CACHE_SECONDS = 1.0
_cache: dict[str, Any] = {"at": float("-inf"), "pattern": None}


def _sources() -> tuple[tuple[str, str], ...]:
    """Every pattern, with where it comes from (for messages that must not quote it)."""
    from agentflow._guardrails.policy import enabled_policies

    sources = [
        (pattern, f"line {n} of AGENTFLOW['REDACT']")
        for n, pattern in enumerate(conf.setting("REDACT"), 1)
    ]
    for policy in enabled_policies():
        sources += [
            (pattern, f"line {n} of Policy '{policy.name}' (id {policy.pk})")
            for n, pattern in enumerate(policy.redact_patterns, 1)
        ]
    sources += [
        (syntax.literal(key), f"the API key of AGENTFLOW['LLM']['{alias}']")
        for alias, key in _model_keys()
    ]
    return tuple(sources)


def _model_keys() -> list[tuple[str, str]]:
    """The configured model API keys, by alias: a key has no shape a pattern could name.

    A key shorter than the model layer's minimum is left alone (a local server's "x" would
    blank every x). An alias that cannot be built has no key to redact; the system check
    reports it.
    """
    from agentflow.llm import _base as base
    from agentflow.llm import _providers as providers

    keys = []
    for alias in sorted(conf.setting("LLM") or {}):
        try:
            key = providers.get(alias).api_key
        except (UnknownModel, ImportError):  # the system check reports a broken alias
            continue
        if len(key) >= base.MIN_KEY_LENGTH:
            keys.append((alias, key))
    return keys


def _pattern() -> Patterns | None:
    now = time.monotonic()
    if now - _cache["at"] > max(conf.setting("POLICY_CACHE_SECONDS"), MIN_CACHE_SECONDS):
        _cache["pattern"] = _compile(_sources())  # raises for a pattern RE2 refuses
        _cache["at"] = now
    return _cache["pattern"]


@conf.on_reload
def clear_cache(**kwargs: Any) -> None:
    """Forget the combined patterns (on Policy saves and deletes in this process, and settings)."""
    _cache["at"] = float("-inf")


def redact_text(text: str) -> str:
    """``text`` with every match of a redaction pattern replaced."""
    patterns = _pattern()
    if patterns is None:
        return text
    return _Scan(patterns).changes([text]).get(0, text)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every matching string (and key) redacted."""
    patterns = _pattern()
    if patterns is None:
        return value
    strings: list[str] = []
    _collect(value, strings)
    return _rebuild(value, _Scan(patterns).changes(strings), count())


def redact_json(text: str | None) -> str | None:
    """The JSON text with its strings redacted; the same text when nothing matches."""
    if text is None:
        return None
    patterns = _pattern()
    if patterns is None:
        return text
    value = json.loads(text)
    strings: list[str] = []
    _collect(value, strings)
    changed = _Scan(patterns).changes(strings)
    if not changed:
        return text
    value = _rebuild(value, changed, count())
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _collect(value: Any, into: list[str]) -> None:
    """Every string of ``value``, keys included, in the order ``_rebuild`` visits them."""
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect(key, into)
            if isinstance(item, str):  # the common leaf, without a call
                into.append(item)
            else:
                _collect(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, str):
                into.append(item)
            else:
                _collect(item, into)


def _rebuild(value: Any, changed: dict[int, str], counter: count) -> Any:
    if isinstance(value, str):
        return changed.get(next(counter), value)
    if isinstance(value, dict):  # the key is built before its value, as _collect visits them
        return {
            _rebuild(k, changed, counter): _rebuild(v, changed, counter) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_rebuild(item, changed, counter) for item in value]
    return value


class _Scan:
    """One value's redaction: at most MAX_MATCHES matches, then the rest replaced whole."""

    def __init__(self, patterns: Patterns) -> None:
        self.regex = patterns.regex
        self.alone = patterns.alone
        self.left = MAX_MATCHES

    def changes(self, strings: list[str]) -> dict[int, str]:
        """The redacted strings that differ from ``strings``, by index."""
        joined = SEPARATOR.join(strings) if not self.alone and len(strings) > 1 else ""
        if not joined or joined.count(SEPARATOR) != len(strings) - 1:  # or a string holds one
            return self._each(strings, range(len(strings)))
        # One scan of the strings joined. A match inside one string is the match a scan of
        # that string alone finds (RE2's \b sees the separator as it sees a string's edge),
        # unless an earlier match ran into the string: those strings are scanned alone.
        spans: dict[int, list[tuple[int, int]]] = {}
        alone: set[int] = set()
        cut: tuple[int, int] | None = None
        index = begin = at = 0  # the string at position ``at`` of ``joined``, and its start
        for match in self.regex.finditer(joined):
            start, end = match.span()
            # Matches come in order, so counting separators since the last one is linear.
            passed = joined.count(SEPARATOR, at, start)
            if passed:
                index += passed
                begin = joined.rfind(SEPARATOR, at, start) + 1
            at = start
            if not self.left:
                cut = (index, start - begin)
                break
            self.left -= 1
            across = joined.count(SEPARATOR, start, end)
            if across:
                alone.update(range(index, index + across + 1))
            else:
                spans.setdefault(index, []).append((start - begin, end - begin))
        changed = {i: _replaced(strings[i], found) for i, found in spans.items() if i not in alone}
        changed |= self._each(strings, sorted(alone))
        if cut is not None:  # the rest of the value, from the match past the limit on
            index, offset = cut
            kept = (
                "" if index in alone else _replaced(strings[index][:offset], spans.get(index, []))
            )
            changed[index] = kept + REPLACEMENT
            changed |= dict.fromkeys(range(index + 1, len(strings)), REPLACEMENT)
        return changed

    def _each(self, strings: list[str], indexes: Any) -> dict[int, str]:
        changed = {}
        for i in indexes:
            text = strings[i]
            found: list[tuple[int, int]] = []
            for match in self.regex.finditer(text):
                start, end = match.span()
                if not self.left:
                    changed[i] = _replaced(text[:start], found) + REPLACEMENT
                    break
                self.left -= 1
                found.append((start, end))
            else:
                if found:
                    changed[i] = _replaced(text, found)
        return changed


def _replaced(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of its (ordered, disjoint) ``spans`` replaced."""
    pieces, at = [], 0
    for start, end in spans:
        pieces += (text[at:start], REPLACEMENT)
        at = end
    pieces.append(text[at:])
    return "".join(pieces)
