"""JSON encoding of everything a run stores, with the size limit and the args hash."""

from __future__ import annotations

import hashlib
import json
import traceback
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from agentflow import conf
from agentflow.exceptions import PayloadError

# Bounds on what the runtime itself records about a failure, so recording it never fails.
MAX_MESSAGE_CHARS = 4_000
MAX_TRACEBACK_CHARS = 16_000


def dumps(value: Any, *, what: str, sort_keys: bool = False, limited: bool = True) -> str:
    """Encode ``value`` as JSON, refusing what is not JSON or larger than MAX_PAYLOAD_BYTES.

    ``limited=False`` is for records the runtime writes itself (errors, its own events),
    which are bounded where they are made instead.
    """
    try:
        text = json.dumps(
            value,
            cls=DjangoJSONEncoder,
            separators=(",", ":"),
            sort_keys=sort_keys,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serializable ({exc}). Return and pass only JSON values "
            "(dict, list, str, int, float, bool, None; dates, decimals and UUIDs become strings)."
        ) from None
    limit = conf.setting("MAX_PAYLOAD_BYTES")
    if limited and len(text) > limit:
        raise PayloadError(
            f"{what} is {len(text):,} bytes, over AGENTFLOW['MAX_PAYLOAD_BYTES'] = {limit:,}. "
            "Store large data elsewhere (a file or a model) and pass a reference."
        )
    return text


def loads(value: Any) -> Any:
    """Decode a JSON column value; some backends hand back text, others parsed values."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def args_hash(canonical_json: str) -> str:
    """A short, stable fingerprint of a step's arguments (JSON dumped with sorted keys)."""
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
