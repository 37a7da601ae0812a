"""JSON encoding of everything a run stores, with the size limit and the args hash.

Every value a run stores passes ``dumps``, so this is where values PostgreSQL or JSON
cannot hold are refused (NUL characters, lone surrogates, NaN, integers too long to
convert to text, nesting deeper than MAX_DEPTH), with the path to the offending part,
before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import sys
import traceback
from json.encoder import c_make_encoder, encode_basestring_ascii
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from agentflow import conf
from agentflow.exceptions import PayloadError

# Bounds on what the runtime itself records about a failure, so recording it never fails.
MAX_MESSAGE_CHARS = 4_000
MAX_TRACEBACK_CHARS = 16_000
# Deepest nesting of a stored value. Python's json and the redaction walk recurse once per
# level, so a bound well inside the interpreter's recursion limit keeps them safe.
MAX_DEPTH = 100

# Surrogate code points are never valid text (a pair in a str is two lone halves).
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# Integers below this many bits have fewer digits (about 600) than Python's smallest allowed
# int-to-text limit (sys.get_int_max_str_digits(), at least 640): they always convert.
_SHORT_INT_BITS = 2_000


def dumps(value: Any, *, what: str, sort_keys: bool = False, limited: bool = True) -> str:
    """Encode ``value`` as JSON, refusing what is not JSON or larger than MAX_PAYLOAD_BYTES.

    ``limited=False`` is for records the runtime writes itself (errors, its own events),
    which are bounded where they are made instead; characters PostgreSQL cannot store
    become U+FFFD there, so recording a failure never fails.
    """
    text = _encoded_plainly(value, sort_keys)
    if text is None:  # it may hold something unstorable: walk it to find and name it
        text = _checked(value, what=what, sort_keys=sort_keys, limited=limited)
    limit = conf.setting("MAX_PAYLOAD_BYTES")
    if limited and len(text) > limit:
        raise PayloadError(
            f"{what} is {len(text):,} bytes, over AGENTFLOW['MAX_PAYLOAD_BYTES'] = {limit:,}. "
            "Store large data elsewhere (a file or a model) and pass a reference."
        )
    return text


# One encoder each way, built once: json.dumps(cls=...) builds one per call, which costs
# more than encoding a small value. The output is json.dumps's, byte for byte (args hashes
# of recorded history depend on it).
_ENCODERS = {
    sort_keys: DjangoJSONEncoder(separators=(",", ":"), sort_keys=sort_keys, allow_nan=False)
    for sort_keys in (False, True)
}


if c_make_encoder is not None:  # CPython's C encoder, without per-call set-up
    # No markers: stateless, so threads share it; a cycle ends in RecursionError, and the
    # slow path then names it (nesting past MAX_DEPTH).
    _FAST = {
        # (markers, default, encoder, indent, key and item separators, sort_keys,
        # skipkeys, allow_nan)
        sort_keys: c_make_encoder(
            None, encoder.default, encode_basestring_ascii, None, ":", ",", sort_keys, False, False
        )
        for sort_keys, encoder in _ENCODERS.items()
    }

    def _encode(value: Any, sort_keys: bool) -> str:
        if isinstance(value, str):
            return encode_basestring_ascii(value)
        return "".join(_FAST[sort_keys](value, 0))

else:  # pragma: no cover (other Pythons)

    def _encode(value: Any, sort_keys: bool) -> str:
        return _ENCODERS[sort_keys].encode(value)


def _encoded_plainly(value: Any, sort_keys: bool) -> str | None:
    """The JSON of a value that plainly holds nothing unstorable, without walking it.

    NaN is refused by the encoder; a NUL or a lone surrogate can only show as a ``\\u``
    escape; nesting deeper than MAX_DEPTH needs more brackets than that. Anything else
    (None) goes the slow way, which names the problem.
    """
    try:
        text = _encode(value, sort_keys)
    except (TypeError, ValueError, RecursionError):
        return None
    if "\\u" in text or text.count("[") + text.count("{") > MAX_DEPTH:
        return None
    return text


def _checked(value: Any, *, what: str, sort_keys: bool, limited: bool) -> str:
    """Walk the value for what cannot be stored (scrubbing runtime records), then encode."""
    problem = _problem(value, 0)
    if problem is not None and not limited and problem[0] in ("nul", "surrogate"):
        value = _scrubbed(value, 0)
        problem = _problem(value, 0)
    if problem is not None:
        raise PayloadError(_describe(what, *problem))
    try:
        return _encode(value, sort_keys)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serializable ({exc}). Return and pass only JSON values "
            "(dict, list, str, int, float, bool, None; dates, decimals and UUIDs become strings)."
        ) from None


def check_text(text: Any, *, what: str, max_chars: int | None = None) -> None:
    """Refuse a value for a text column: not a string, NUL, surrogates, or too long."""
    if not isinstance(text, str):
        raise PayloadError(f"{what} must be a string, not {type(text).__name__}.")
    bad = _bad_char(text)
    if bad is not None:
        raise PayloadError(_describe(what, *bad, None))
    if max_chars is not None and len(text) > max_chars:
        raise PayloadError(
            f"{what} is {len(text):,} characters long, over the limit of {max_chars:,}. "
            "Use a shorter value (a hash of a long one, for instance)."
        )


def parse(text: str, *, what: str) -> Any:
    """Decode JSON text from outside (a form, a command line), refusing what dumps refuses."""

    def refuse(constant: str) -> Any:
        raise PayloadError(_describe(what, "nan", constant, None))

    try:
        value = json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{what} is not valid JSON: {exc.msg} at character {exc.pos}.") from None
    except ValueError:  # a number past Python's int-to-text limit (sys.set_int_max_str_digits)
        limit = sys.get_int_max_str_digits()
        raise PayloadError(
            _describe(what, "long", f"a number of more than {limit:,} digits", None)
        ) from None
    except RecursionError:  # the parser recursed past the interpreter's limit
        raise PayloadError(_describe(what, "deep", "", None)) from None
    problem = _problem(value, 0)
    if problem is not None:
        raise PayloadError(_describe(what, *problem))
    return value


# What cannot be stored: (kind, detail, path segments from the innermost outwards).
Problem = tuple[str, str, list[str]]


def _bad_char(text: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return "nul", "\\x00"
    if not text.isascii():
        found = _SURROGATE.search(text)
        if found is not None:
            return "surrogate", f"\\u{ord(found.group()):04x}"
    return None


def _bad_scalar(value: Any) -> tuple[str, str] | None:
    if isinstance(value, str):
        return _bad_char(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan", "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and value.bit_length() > _SHORT_INT_BITS:
        try:
            str(value)
        except ValueError:
            return "long", f"an integer of about {int(value.bit_length() * math.log10(2)):,} digits"
    return None


def _problem(value: Any, depth: int) -> Problem | None:
    """The first part of ``value`` that cannot be stored, depth first; None if all can."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        bad = _bad_scalar(value)
        return None if bad is None else (*bad, [])
    if depth >= MAX_DEPTH:
        return "deep", "", []
    keyed = isinstance(value, dict)
    for key, item in items:
        if keyed:
            bad = _bad_scalar(key)
            if bad is not None:
                return bad[0], f"{bad[1]} in a key", []
        found = _problem(item, depth + 1)
        if found is not None:
            found[2].append(_segment(key, keyed))
            return found
    return None


def _segment(key: Any, keyed: bool) -> str:
    if not keyed:
        return f"[{key}]"
    if isinstance(key, str) and key.isidentifier():
        return f".{key[:40]}"
    return f"[{str(key)[:40]!r}]"


def _describe(what: str, kind: str, detail: str, path: list[str] | None) -> str:
    """The message for a problem; ``path`` None for a plain string or an unknown place."""
    where = ""
    if path is not None:
        shown = "$" + "".join(reversed(path))
        where = f" at {shown if len(shown) <= 80 else shown[:80] + '...'}"
    if kind == "nul":
        return (
            f"{what} holds a NUL character ({detail}){where}, which PostgreSQL cannot store. "
            "Remove it (text.replace('\\x00', '')) before passing or returning the value."
        )
    if kind == "surrogate":
        return (
            f"{what} holds a lone surrogate ({detail}){where}, which is not valid Unicode. "
            "Decode bytes with errors='replace' (not 'surrogateescape') or remove it."
        )
    if kind == "long":
        return (
            f"{what} holds {detail}{where}; numbers of at most "
            f"{sys.get_int_max_str_digits():,} digits convert to and from text (Python's "
            "sys.get_int_max_str_digits()). Send a longer number as a string."
        )
    if kind == "deep":
        return (
            f"{what} is nested deeper than {MAX_DEPTH} levels{where}. Flatten it, or store it "
            "elsewhere (a file or a model) and pass a reference."
        )
    return (
        f"{what} is not JSON: it holds {detail}{where}, and JSON has no NaN or infinity. "
        "Use None or a string instead."
    )


def _scrubbed(value: Any, depth: int) -> Any:
    """A copy with every NUL and surrogate replaced by U+FFFD (for the runtime's own records)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if depth > MAX_DEPTH:
        return value  # left for the check that follows to refuse
    if isinstance(value, dict):
        return {_scrubbed(k, depth + 1): _scrubbed(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v, depth + 1) for v in value]
    return value


def loads(value: Any) -> Any:
    """Decode a JSON column value; some backends hand back text, others parsed values."""
    return json.loads(value) if isinstance(value, str | bytes) else value


@functools.lru_cache(maxsize=4096)
def args_hash(canonical_json: str) -> str:
    """A short, stable fingerprint of a step's arguments (JSON dumped with sorted keys).

    Cached: a loop asks for the same small arguments at position after position.
    """
    return hashlib.sha256(canonical_json.encode()).hexdigest()[:16]


def calls_hash(calls: list[tuple[str, str]]) -> str:
    """The fingerprint of a fan-out: every (tool, canonical args JSON) in order."""
    digest = hashlib.sha256()
    for tool, args_json in calls:
        digest.update(f"{tool}\0{args_json}\n".encode())
    return digest.hexdigest()[:16]


def error_record(exc: BaseException, **extra: Any) -> dict[str, Any]:
    """Describe an exception for storage: type, message and traceback."""
    cls = type(exc)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc)[:MAX_MESSAGE_CHARS],
        "traceback": "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:],
        **extra,
    }


SHOWN = 200  # characters of a value a message shows


def shortened(text: str) -> str:
    """``text`` cut to SHOWN characters, saying how much was left out (for messages)."""
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text) - SHOWN} more)"
