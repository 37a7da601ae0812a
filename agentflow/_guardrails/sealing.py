"""Protecting a value for storage: store it redacted, and seal the real one if that changed.

The encryption itself (``seal``, ``unseal``, ``reveal``) belongs to the sealed columns, in
``agentflow.models.sealing``; it is re-exported here so the runtime finds both halves,
``protect`` on the way in and ``reveal`` on the way out, in one place.
"""

from __future__ import annotations

from agentflow._guardrails.redaction import redact_json
from agentflow.models.sealing import reveal, seal, unseal

__all__ = ["protect", "reveal", "seal", "unseal"]


def protect(text: str | None, *, redacted: str | None = None) -> tuple[str | None, str | None]:
    """(what to store: the redacted JSON, the sealed real JSON if redaction changed it).

    ``redacted``: the stored form, when the caller built it from parts that were redacted
    as they were recorded; it is not redacted again.
    """
    if text is None:
        return None, None
    stored = redact_json(text) if redacted is None else redacted
    return stored, (None if stored == text else seal(text))
