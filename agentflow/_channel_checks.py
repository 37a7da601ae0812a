"""System check: the Redis channel layer must not time out its own wait for messages (W011).

channels_redis's ``RedisChannelLayer`` waits for a socket's messages with ``BZPOPMIN``,
blocking up to ``brpop_timeout`` (5 s). redis-py 8 gives each connection a 5 s
``socket_timeout`` unless the host entry names one, so the read gives up before Redis
answers. channels then ends the consumer: the websocket closes with 1011 after about 5 quiet
seconds. (The pub/sub layer reads with a timeout of its own and is not affected.)
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

from django.core.checks import Warning, register

# What channels_redis connects to when CONFIG names no hosts.
DEFAULT_HOST = "redis://localhost:6379"
HINT = (
    'Give each host no read timeout: CHANNEL_LAYERS["default"]["CONFIG"] = {"hosts": '
    '[{"address": "redis://...", "socket_timeout": None}]}.'
)


@register("agentflow")
def check_layer_socket_timeout(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Each host of a Redis layer must wait longer than the layer blocks for messages."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    layer = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default") or {}
    try:
        from channels_redis.core import RedisChannelLayer

        backend = import_string(str(layer.get("BACKEND", "")))
    except ImportError:  # no channels_redis, or a backend channels itself will report
        return []
    if not (isinstance(backend, type) and issubclass(backend, RedisChannelLayer)):
        return []
    hosts = (layer.get("CONFIG") or {}).get("hosts") or [DEFAULT_HOST]
    if isinstance(hosts, str | bytes):  # channels_redis refuses it with its own error
        return []
    block = float(backend.brpop_timeout)
    default = redis_default_socket_timeout()
    messages = []
    for host in hosts:
        timeout, named = _socket_timeout(host)
        if not named:
            timeout = default
        if timeout is None or timeout > block:
            continue
        where = "a socket_timeout" if named else "redis-py's default socket_timeout"
        messages.append(
            Warning(
                f"The channel layer's Redis host {_label(host)} has {where} of {timeout:g}s, no "
                f"longer than the {block:g}s the layer blocks waiting for messages, so a "
                f"websocket's wait fails after {timeout:g}s of quiet: channels closes the "
                "socket with code 1011 (agentflow's own sockets rejoin their group instead, "
                "with a warning in the log each time).",
                hint=HINT,
                id="agentflow.W011",
            )
        )
    return messages


def redis_default_socket_timeout() -> float | None:
    """The read timeout redis-py gives an asyncio connection that names none (None: none)."""
    import redis
    from redis.asyncio.connection import Connection

    for cls in Connection.__mro__:
        try:
            parameter = inspect.signature(cls.__init__).parameters.get("socket_timeout")
        except (TypeError, ValueError):
            continue
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    # Not introspectable: redis-py 8 made it 5 s; before, there was none.
    major = str(getattr(redis, "__version__", "0")).split(".")[0]
    return 5.0 if major.isdigit() and int(major) >= 8 else None


def _socket_timeout(host: Any) -> tuple[float | None, bool]:
    """A host entry's socket_timeout and whether it names one, read as channels_redis does.

    A host is a URL, a ``(host, port)`` pair, or a dict of connection arguments with an
    optional ``"address"`` URL, whose query string wins over the dict (redis-py's from_url).
    """
    from redis.asyncio.connection import parse_url

    if isinstance(host, dict):
        options = dict(host)
        address = options.pop("address", None)
    elif isinstance(host, tuple | list):
        options, address = {}, None
    else:
        options, address = {}, host
    if address is not None:
        # Not a URL redis-py reads: channels_redis says so when it connects.
        with contextlib.suppress(TypeError, ValueError):
            options.update(parse_url(address.decode() if isinstance(address, bytes) else address))
    if "socket_timeout" not in options:
        return None, False
    value = options["socket_timeout"]
    try:
        return (None if value is None else float(value)), True
    except (TypeError, ValueError):  # redis-py will refuse it when it connects
        return None, True


def _label(host: Any) -> str:
    """A host entry for a message, without its password."""
    from kombu.utils.url import maybe_sanitize_url

    if isinstance(host, dict):
        address = host.get("address") or f"{host.get('host', 'localhost')}:{host.get('port', 6379)}"
    elif isinstance(host, tuple | list):
        address = ":".join(str(part) for part in host)
    else:
        address = host
    return maybe_sanitize_url(address.decode() if isinstance(address, bytes) else str(address))
