"""A reviewer's edits on redacted data: what was left alone keeps its real value.

The approval form shows the redacted copy of the data or arguments (a secret reads
``[redacted]``). A reviewer who changes only the amount sends the whole form back, the
redacted fields included; taken as it is, the tool would get ``[redacted]`` where a real
value was. ``keep_real`` walks the edited value beside the shown one and the real one and
puts the real value back wherever the reviewer left the shown one unchanged, in one pass
over the data.
"""

from __future__ import annotations

from typing import Any

from agentflow._guardrails.redaction import REPLACEMENT
from agentflow.exceptions import InvalidInput

_ABSENT = object()


def keep_real(edited: Any, shown: Any, real: Any, where: str) -> Any:
    """``edited``, with the real value wherever it equals what the reviewer was shown.

    A string that still holds ``[redacted]`` but was changed cannot be rebuilt (the real
    text of the redacted part is not the reviewer's to see): ``InvalidInput`` names it.
    """
    return _walk(edited, shown, real, "$", where)


def _walk(edited: Any, shown: Any, real: Any, path: str, where: str) -> Any:
    if shown is _ABSENT or real is _ABSENT:
        return edited
    if type(edited) is type(shown) and edited == shown:
        return real
    if isinstance(edited, dict) and isinstance(shown, dict) and isinstance(real, dict):
        return {
            key: _walk(
                value, shown.get(key, _ABSENT), real.get(key, _ABSENT), f"{path}.{key}", where
            )
            for key, value in edited.items()
        }
    if isinstance(edited, list) and isinstance(shown, list) and isinstance(real, list):
        if len(shown) == len(real):
            return [
                _walk(value, shown[i] if i < len(shown) else _ABSENT,
                      real[i] if i < len(real) else _ABSENT, f"{path}[{i}]", where)
                for i, value in enumerate(edited)
            ]  # fmt: skip
        return edited
    if isinstance(edited, str) and REPLACEMENT in edited and shown != real:
        raise InvalidInput(
            f"The data for {where} changes {path}, which holds a redacted secret "
            f"({REPLACEMENT}): its real value cannot be kept in an edited text. Leave that "
            "field as it was, or type its whole value again. Nothing was decided."
        )
    return edited
