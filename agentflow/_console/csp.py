"""The Content-Security-Policy of console pages: no inline script can run there.

Step outputs are escaped by the templates; this header is the second wall, so that a
rendering mistake cannot become script execution. Data for the page's scripts travels in
``<script type="application/json">`` blocks (``json_script``), which never execute.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpResponse

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)


def protect(response: HttpResponse) -> HttpResponse:
    """Set the console's policy on ``response`` (a site's stricter header is kept)."""
    if "Content-Security-Policy" not in response:
        response["Content-Security-Policy"] = POLICY
    return response


def csp(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Decorate a console view so that its response carries the policy."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> HttpResponse:
        return protect(view(*args, **kwargs))

    return wrapped
