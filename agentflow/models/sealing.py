"""Sealing: real values the runtime must keep but may not store in the clear.

A fan-out child's arguments, once redacted for storage, are still needed by the worker
that runs the tool; so are a reviewer's edited arguments. They are kept encrypted
(Fernet: AES-128-CBC with an HMAC) in the ``sealed_*`` columns, with a key derived from
``SECRET_KEY``; ``SECRET_KEY_FALLBACKS`` still open values sealed before a key rotation.
What to seal (the values redaction changed) is decided by ``agentflow._guardrails.sealing``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from agentflow.exceptions import AgentflowError

CONTEXT = b"agentflow.sealing.v1"


def _fernet(secret: str) -> Fernet:
    digest = hashlib.sha256(CONTEXT + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


@lru_cache(maxsize=4)
def _keys(secret: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet(secret), *(_fernet(key) for key in fallbacks)])


def _box() -> MultiFernet:
    return _keys(settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ())))


def seal(text: str) -> str:
    """Encrypt ``text`` for storage."""
    return _box().encrypt(text.encode()).decode()


def unseal(token: str) -> str:
    """Decrypt a sealed value; a clear error if SECRET_KEY changed without a fallback."""
    try:
        return _box().decrypt(token.encode()).decode()
    except InvalidToken:
        raise AgentflowError(
            "A sealed value cannot be opened: SECRET_KEY changed since it was stored. Add the "
            "old key to SECRET_KEY_FALLBACKS until the runs that hold sealed values finish."
        ) from None


def reveal(stored: Any, sealed: str | None) -> Any:
    """The real value of a protected column: the sealed JSON if any, else the stored one."""
    return stored if not sealed else json.loads(unseal(sealed))
