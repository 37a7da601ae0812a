"""Live sockets stay up on the Redis channel layer: quiet, across a Redis restart, and leave
no group membership behind; and ``agentflow.W011`` flags the settings that would drop them.

The sockets are real: a daphne process (``asgi_server``) serves the site, and a minimal
websocket client over a plain TCP socket sees every frame the server sends, close frames
included, so a close with 1011 fails the test where it happens.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import select
import signal
import socket as sockets
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from redis.asyncio.connection import Connection as AsyncConnection

from agentflow._channel_checks import check_layer_socket_timeout, redis_default_socket_timeout
from agentflow._engine import ports
from agentflow._engine.state.outbox import append_event
from agentflow.events import ALL_RUNS_GROUP, run_group
from tests.browser import LiveServer, free_port
from tests.support import wait_until
from tests.test_websockets import make_user, new_run, session_of, unwrap

LAYER_FAILED = "the channel layer failed"  # what agentflow logs when a socket's receive fails
OPCODE_TEXT, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x8, 0x9, 0xA


class Closed(AssertionError):
    """The server closed the socket (``code`` None: the connection dropped without a frame)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"the server closed the socket (code {code})")
        self.code = code


class Client:
    """A websocket client on a blocking TCP socket: frames in, pings answered, masks out."""

    def __init__(self, server: LiveServer, path: str, session: str) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = sockets.create_connection((host, int(port)), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {server.url}\r\n"
                f"Cookie: {django_settings.SESSION_COOKIE_NAME}={session}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._recv(time.monotonic() + 10)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head.decode(errors="replace")

    def _recv(self, deadline: float) -> bool:
        """Read what arrives before ``deadline`` into the buffer; False when nothing did."""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(None)
        self.buffer += chunk
        return True

    def _frame(self) -> tuple[int, bytes] | None:
        """Take one whole frame off the buffer, if it holds one (server frames are unmasked)."""
        if len(self.buffer) < 2:
            return None
        first, second = self.buffer[0], self.buffer[1]
        assert first & 0x80, "fragmented frames are not expected"
        length, at = second & 0x7F, 2
        if length == 126:
            if len(self.buffer) < 4:
                return None
            (length,), at = struct.unpack("!H", self.buffer[2:4]), 4
        elif length == 127:
            if len(self.buffer) < 10:
                return None
            (length,), at = struct.unpack("!Q", self.buffer[2:10]), 10
        if len(self.buffer) < at + length:
            return None
        payload, self.buffer = self.buffer[at : at + length], self.buffer[at + length :]
        return first & 0x0F, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        assert len(payload) < 126
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON frame, or None if none came by ``deadline``; a close raises Closed."""
        while True:
            frame = self._frame()
            if frame is None:
                if not self._recv(deadline):
                    return None
                continue
            opcode, payload = frame
            if opcode == OPCODE_CLOSE:
                raise Closed(struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None)
            if opcode == OPCODE_PING:
                self._send(OPCODE_PONG, payload)
            elif opcode == OPCODE_TEXT:
                return json.loads(payload)

    def receive_until(self, done: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
        """Events received (batches unwrapped) until ``done(events)``."""
        events: list[dict] = []
        deadline = time.monotonic() + timeout
        while not done(events):
            frame = self.receive(deadline)
            assert frame is not None, f"timed out; got {events}"
            events += unwrap(frame)
        return events

    def close(self) -> int | None:
        """Close as a browser does; return the code the server's close frame echoes."""
        try:
            self._send(OPCODE_CLOSE, struct.pack("!H", 1000))
            while self.receive(time.monotonic() + 10) is not None:
                pass
            raise AssertionError("the server did not answer the close")
        except Closed as closed:
            return closed.code
        except OSError:  # the server had dropped the connection already
            return None
        finally:
            self.sock.close()


def quiet(clients: list[Client], seconds: float) -> None:
    """Wait ``seconds``; every socket must receive nothing and stay open meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable = select.select([c.sock for c in clients], [], [], deadline - time.monotonic())[0]
        for client in clients:
            if client.sock in readable:
                frame = client.receive(time.monotonic() + 0.01)
                assert frame is None, f"a frame during the quiet period: {frame}"


def up_to(seq: int) -> Callable[[list[dict]], bool]:
    return lambda events: bool(events) and events[-1]["seq"] >= seq


def status_of(run_id: Any, seq: int) -> Callable[[list[dict]], bool]:
    """A list socket's frames include the run's status change at ``seq``."""
    return lambda frames: any(
        frame["event"] == "run.status"
        and frame["data"]["run"] == str(run_id)
        and frame["data"]["seq"] == seq
        for frame in frames
    )


def group_key(group: str) -> str:
    return f"asgi:group:{group}"  # channels_redis's key for a group (its default prefix)


@dataclass
class LayerRedis:
    """A redis-server for the channel layer alone, which a test may kill and start again."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / "layer-redis.log", "a")  # noqa: SIM115 (the server's)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        client = self.client()

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                assert self.process.poll() is None, (self.directory / "layer-redis.log").read_text()
                return False

        wait_until(answers, timeout=10, what="the layer's redis-server to answer")
        client.close()

    def kill(self) -> None:
        """SIGKILL: every connection drops at once, and the groups are gone with the data."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def waiting(self) -> set[int]:
        """The connections blocked in the layer's wait for messages (BZPOPMIN)."""
        client = self.client()
        try:
            return {c["id"] for c in client.client_list() if c["cmd"] == "bzpopmin"}
        finally:
            client.close()

    def members(self, group: str) -> int:
        client = self.client()
        try:
            return client.zcard(group_key(group))
        finally:
            client.close()


@pytest.fixture
def layer_redis(tmp_path, settings, monkeypatch) -> Iterator[LayerRedis]:
    """A private Redis for the channel layer of daphne and of this process; broker unchanged."""
    server = LayerRedis(free_port(), tmp_path)
    server.start()
    monkeypatch.setenv("AGENTFLOW_TEST_LAYER_REDIS_URL", server.url)  # read by tests.settings
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["hosts"][0]["address"] = server.url
    settings.CHANNEL_LAYERS = layers
    ports._load.cache_clear()  # a new publisher, whose thread takes the layer configured now
    try:
        yield server
    finally:
        ports._load.cache_clear()
        server.kill()


@pytest.fixture
def layer_server(layer_redis, asgi_server) -> LiveServer:
    """daphne with its channel layer on ``layer_redis`` (started first, so daphne gets it)."""
    return asgi_server


@pytest.fixture
def admin_session(transactional_db) -> str:
    return session_of(make_user("admin", staff=True, view=True))


@pytest.mark.usefixtures("redis_client")
def test_quiet_sockets_stay_open_and_receive_the_next_event(asgi_server, admin_session):
    """With the settings as shipped, 15 quiet seconds neither close a socket nor fail a read."""
    run = new_run(events=1)
    run_socket = Client(asgi_server, f"ws/agentflow/runs/{run.id}/", admin_session)
    list_socket = Client(asgi_server, "ws/agentflow/runs/", admin_session)
    assert [event["seq"] for event in run_socket.receive_until(up_to(1), timeout=10)] == [1]

    quiet([run_socket, list_socket], 15)

    append_event(run.id, "run.started", {})
    assert [e["seq"] for e in run_socket.receive_until(up_to(2), timeout=10)] == [2]
    list_socket.receive_until(status_of(run.id, 2), timeout=10)
    # Not one failed read in the quiet period: with redis-py's 5 s default socket_timeout
    # every wait for messages would have failed (and, before the rejoin, closed with 1011).
    assert LAYER_FAILED not in asgi_server.log(), asgi_server.log()[-3000:]
    assert run_socket.close() == 1000 and list_socket.close() == 1000


def test_sockets_rejoin_after_the_layers_redis_restarts(layer_redis, layer_server, admin_session):
    """No 1011, and the run socket gets what was committed while Redis was down, once each."""
    run = new_run(events=1)
    run_socket = Client(layer_server, f"ws/agentflow/runs/{run.id}/", admin_session)
    list_socket = Client(layer_server, "ws/agentflow/runs/", admin_session)
    events = run_socket.receive_until(up_to(1), timeout=10)
    assert layer_redis.members(run_group(run.id)) == layer_redis.members(ALL_RUNS_GROUP) == 1
    wait_until(layer_redis.waiting, timeout=10, what="daphne to wait for messages")

    layer_redis.kill()
    for i in range(3):  # committed during the outage: their publishes fail
        append_event(run.id, "test.tick", {"i": i})
    layer_redis.start()  # the same port, and empty: the groups are forgotten
    wait_until(
        lambda: layer_redis.members(run_group(run.id)) and layer_redis.members(ALL_RUNS_GROUP),
        timeout=30,
        what="both sockets to rejoin their groups",
    )

    # Read back from the table on rejoining, before any later event could reveal the gap.
    events += run_socket.receive_until(up_to(4), timeout=15)
    append_event(run.id, "run.started", {})  # seq 5, published live after the restart
    events += run_socket.receive_until(up_to(5), timeout=15)
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5]
    assert [event["data"].get("i") for event in events[1:4]] == [0, 1, 2]
    list_socket.receive_until(status_of(run.id, 5), timeout=15)
    quiet([run_socket, list_socket], 0.5)  # nothing repeated
    assert LAYER_FAILED in layer_server.log()  # the path under test was taken
    assert run_socket.close() == 1000 and list_socket.close() == 1000


def test_closed_sockets_leave_their_groups_even_after_a_layer_error(
    layer_redis, layer_server, admin_session
):
    """Sockets whose layer connection was reset still leave their groups when they close."""
    run = new_run(events=1)
    clients = [
        Client(layer_server, path, admin_session)
        for path in [f"ws/agentflow/runs/{run.id}/", "ws/agentflow/runs/"] * 6
    ]
    for client in clients[::2]:
        client.receive_until(up_to(1), timeout=10)
    assert layer_redis.members(run_group(run.id)) == layer_redis.members(ALL_RUNS_GROUP) == 6

    before = wait_until(layer_redis.waiting, timeout=10, what="daphne to wait for messages")
    admin = layer_redis.client()
    admin.client_kill_filter(_type="normal", skipme=True)  # Redis drops daphne's connections
    admin.close()
    wait_until(
        lambda: layer_redis.waiting() - before,
        timeout=10,
        what="daphne to wait for messages again, on a new connection",
    )

    codes = [client.close() for client in clients]
    wait_until(
        lambda: layer_redis.members(run_group(run.id)) == layer_redis.members(ALL_RUNS_GROUP) == 0,
        timeout=20,
        what="every closed socket to leave its group",
    )
    assert codes == [1000] * len(clients)
    assert LAYER_FAILED in layer_server.log()  # the reset reached a socket's receive


def layers(*hosts: Any, backend: str = "channels_redis.core.RedisChannelLayer") -> dict:
    return {"default": {"BACKEND": backend, "CONFIG": {"hosts": list(hosts)}}}


def test_w011_flags_hosts_with_redis_pys_short_default_timeout(settings):
    """Whatever the installed redis-py gives a connection that names no socket_timeout,
    the check reads the same value, and warns when it ends the layer's blocking wait."""
    from channels_redis.core import RedisChannelLayer

    default = AsyncConnection().socket_timeout  # what a host without one really gets
    assert redis_default_socket_timeout() == default
    short = default is not None and default <= RedisChannelLayer.brpop_timeout
    for host in ("redis://:secret@127.0.0.1:6379/0", {"address": "redis://127.0.0.1:6379/0"}):
        settings.CHANNEL_LAYERS = layers(host)
        if not short:  # this redis-py waits as long as the layer blocks: nothing to say
            assert check_layer_socket_timeout() == [], host
            continue
        [warning] = check_layer_socket_timeout()
        assert warning.id == "agentflow.W011"
        assert f"redis-py's default socket_timeout of {default:g}s" in warning.msg, warning.msg
        assert "closes the socket with code 1011" in warning.msg, warning.msg
        assert '"socket_timeout": None' in warning.hint, warning.hint
        assert "secret" not in warning.msg
    # A timeout named, but no longer than the layer's 5 s wait; in the URL's query too.
    for host in (
        {"address": "redis://h:1/0", "socket_timeout": 5},
        "redis://h:1/0?socket_timeout=2",
    ):
        settings.CHANNEL_LAYERS = layers(host)
        assert [m.id for m in check_layer_socket_timeout()] == ["agentflow.W011"], host


def test_w011_is_clean_for_the_shipped_settings_and_long_timeouts(settings):
    assert check_layer_socket_timeout() == []  # tests.settings, from the demo's settings
    for host in (
        {"address": "redis://h:1/0", "socket_timeout": None},
        {"address": "redis://h:1/0", "socket_timeout": 30},
    ):
        settings.CHANNEL_LAYERS = layers(host)
        assert check_layer_socket_timeout() == [], host
    # The pub/sub layer reads with timeouts of its own; other layers are not Redis's.
    settings.CHANNEL_LAYERS = layers(
        "redis://h:1/0", backend="channels_redis.pubsub.RedisPubSubChannelLayer"
    )
    assert check_layer_socket_timeout() == []
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert check_layer_socket_timeout() == []
