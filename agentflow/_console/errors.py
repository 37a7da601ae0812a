"""A stored error as a person reads it: the exception's type and message, then the traceback.

Errors are stored as ``serialize.error_record`` writes them (``type``, ``message``,
``traceback`` and extra keys such as ``tool`` or ``attempts``), redacted. Anything else
(an older or hand-written error) is shown whole as the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agentflow._console.trees import CHARS

KNOWN = ("type", "message", "traceback")


@dataclass(frozen=True)
class ErrorView:
    """What the error box shows; the template escapes every part."""

    type: str  # the dotted type, for the hover title
    message: str
    traceback: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The exception's class name, without its module."""
        return self.type.rpartition(".")[2] or "Error"


def _cut_start(text: str) -> str:
    """The end of a traceback (its last frames matter most), within the payload cut."""
    if len(text) <= CHARS:
        return text
    return "… (earlier frames cut; the step's own page shows all of it)\n" + text[-CHARS:]


def error_view(error: Any) -> ErrorView | None:
    """``error`` as a view, or None when there is none."""
    if error is None or error == "" or error == {}:
        return None
    if not isinstance(error, dict):
        text = error if isinstance(error, str) else json.dumps(error, default=str)
        return ErrorView("Error", text[:CHARS])
    message = error.get("message", "")
    traceback = error.get("traceback", "")
    return ErrorView(
        type=str(error.get("type") or "Error")[:300],
        message=(message if isinstance(message, str) else json.dumps(message, default=str))[:CHARS],
        traceback=_cut_start(traceback) if isinstance(traceback, str) else "",
        details={key: value for key, value in error.items() if key not in KNOWN},
    )
