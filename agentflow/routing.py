"""Websocket routes; a site puts them behind its session and Origin checks in ``asgi.py``."""

from typing import Any

from django.urls import path, re_path

from agentflow._consumers import RunEventsConsumer, RunListConsumer

# A run id as a route takes it: 32 hex digits, with or without the hyphens of a UUID.
__all__ = ["websocket_urlpatterns"]

RUN_ID = r"(?P<run_id>[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12})"


async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Refuse the handshake (a 403), as for an unknown run; no consumer, no channel layer."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


websocket_urlpatterns = [
    path("ws/agentflow/runs/", RunListConsumer.as_asgi()),
    # Only UUID-shaped ids reach the consumer, which refuses an unknown one.
    re_path(rf"^ws/agentflow/runs/{RUN_ID}/$", RunEventsConsumer.as_asgi()),
    # Every other path of ours (a malformed id, '..%2f..%2fetc') is refused here: with no
    # route, the server would fail the handshake with an error (a 500).
    re_path(r"^ws/agentflow/", refuse),
]
