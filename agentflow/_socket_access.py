"""Re-checking who is behind an open websocket: access can end while a socket is open.

A socket authenticates once, at the handshake, from the session cookie. A logout, a
password change, a deactivated account or a revoked permission must still end what the
socket streams, so consumers ask ``current_user`` again every ``RECHECK_SECONDS`` and close
when the answer changes.
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser

# How often an open socket re-checks its user: "closed within seconds" of losing access.
RECHECK_SECONDS = 3.0


def current_user(scope: dict[str, Any]) -> Any:
    """The socket's user as the session says now, read fresh from the database.

    Django's ``get_user`` does what a request would: the session must still exist (a logout
    deletes it), its password hash must still match (a password change), and the user must
    still be allowed to log in (``is_active``). Anything else gives an anonymous user.
    """
    session = scope.get("session")
    key = getattr(session, "session_key", None)
    if not key:
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    return get_user(SimpleNamespace(session=store))
