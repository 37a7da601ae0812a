"""What the tests' scripted model servers share: the Reply script, the HTTP plumbing.

Why: ``tests/openai_server.py`` and ``tests/anthropic_server.py`` answer with different
JSON and SSE, but take the same ``Reply`` scripts, record requests the same way, hold and
cut streams the same way, and start and stop the same way. Each subclasses the two
classes here and writes only its API's bodies and errors.

Stdlib only: a ``ThreadingHTTPServer`` in a daemon thread, bound to 127.0.0.1.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit


@dataclass
class ToolCall:
    """One function call the assistant makes; several in a Reply are parallel tool calls.

    ``arguments`` as a dict is sent as compact JSON; as a str it is sent verbatim (to test
    arguments that are not valid JSON). ``id`` defaults to a deterministic ``call_...``.
    """

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class Reply:
    """What the server answers to one chat-completion request.

    Success (``status`` 200):
      ``text`` and/or ``tool_calls``. Streamed, the text is split into content deltas that
      concatenate to exactly ``text``: by default at whitespace, keeping it (``"a b"`` ->
      ``"a "``, ``"b"``); ``chunks=n`` cuts it into at most n near-equal pieces;
      ``chunks=[...]`` gives the deltas themselves (``text`` may then be left empty).
      Each tool call streams as OpenAI does: one chunk with index, id, type, name and empty
      arguments, then argument fragments. ``usage`` is (prompt_tokens, completion_tokens);
      by default (10, number of content deltas + number of tool calls). ``finish_reason``
      defaults to "tool_calls" when there are tool calls, else "stop".

    Error (any other ``status``):
      an OpenAI error body ``{"error": {"message", "type", "param": null, "code"}}``;
      type and code default per status (see ``_ERROR_DEFAULTS``). ``retry_after`` is sent
      as the ``Retry-After`` header. Errors are never streamed, even for ``stream: true``,
      as with OpenAI.

    Faults (streaming counts "content chunks": every chunk after the first, role-only one
    that carries a content delta or a tool-call piece):
      ``cut_after=n``: after n content chunks the connection is closed mid-body (no finish
      chunk, no usage, no ``[DONE]``; the chunked body is left unterminated, so the client
      sees a broken response, not a short one). Non-streaming: half the JSON is sent.
      ``hold=event``: after ``hold_after`` content chunks the server sets
      ``server.streaming`` and blocks until ``event`` is set (or ``server.release()`` or
      ``server.stop()``). Non-streaming: blocks before answering. ``chunk_delay`` seconds
      pass before every content chunk (many chunks with a delay: a trickling stream).
      A client that closes the connection before the response is whole is counted in
      ``server.disconnects`` and sets ``server.disconnected``.

    ``headers`` adds response headers.
    """

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: tuple[int, int] | None = None
    chunks: int | list[str] | None = None
    chunk_delay: float = 0.0
    finish_reason: str | None = None
    status: int = 200
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    hold: threading.Event | None = None
    hold_after: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.chunks, list):
            joined = "".join(self.chunks)
            if not self.text:
                self.text = joined
            elif joined != self.text:
                raise ValueError("Reply.chunks must concatenate to Reply.text")
        if isinstance(self.chunks, int) and self.chunks < 1:
            raise ValueError("Reply.chunks must be at least 1")

    def deltas(self) -> list[str]:
        """The content deltas a stream of this reply sends, in order."""
        if isinstance(self.chunks, list):
            return [piece for piece in self.chunks if piece]
        if not self.text:
            return []
        if self.chunks is None:
            return re.findall(r"\S+\s*|\s+", self.text)
        size = math.ceil(len(self.text) / self.chunks)
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]

    def token_usage(self) -> dict[str, int]:
        """The ``usage`` object: the given counts, or the deterministic default."""
        prompt, completion = self.usage or (10, len(self.deltas()) + len(self.tool_calls))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def resolved_finish_reason(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


class _HTTPServer(ThreadingHTTPServer):
    """Knows its server, and the open connections, so stop() can close them."""

    daemon_threads = True

    def __init__(self, owner: ScriptedServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), owner.handler_class)


class Cut(Exception):
    """Raised inside the handler to drop the connection mid-response."""


class ScriptedHandler(BaseHTTPRequestHandler):
    """Routing, recording and the plumbing; subclasses write their API's responses."""

    #: The path requests are POSTed to, e.g. "/v1/chat/completions".
    post_path = ""
    protocol_version = "HTTP/1.1"  # keep-alive and chunked bodies, as the client expects
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def handle(self) -> None:
        """Serve the connection; a client that resets it (killed, or done) is not an error."""
        with contextlib.suppress(ConnectionError):
            super().handle()

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output should not carry one access-log line per request."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path.rstrip("/") != self.post_path:
            message = f"Unknown path {self.path}"
            self._guard(lambda: self._send_error_reply(Reply(status=404, error_message=message)))
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            reply = Reply(status=400, error_message=f"Could not parse the JSON body: {exc}")
            self._guard(lambda: self._send_error_reply(reply))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        number, reply = self.server.owner._take(body, headers)
        self._guard(lambda: self._answer(number, body, reply))

    def _guard(self, respond: Callable[[], None]) -> None:
        """Run ``respond``; a cut, or a client that went away, just ends the connection."""
        try:
            respond()
        except Cut:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:  # BrokenPipe, ConnectionReset: the client was killed or gave up
            self.close_connection = True
            self.server.owner._client_left()

    # -- responses -------------------------------------------------------------------

    def _answer(self, number: int, body: dict[str, Any], reply: Reply) -> None:
        if reply.status != 200:
            self._send_error_reply(reply)
        elif body.get("stream"):
            self._stream(number, body, reply)
        else:
            self._complete(number, body, reply)

    def _start(self, status: int, content_type: str, reply: Reply | None, **extra: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header(*self.request_id(self.server.owner._served()))
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        if reply is not None:
            if reply.retry_after is not None:
                self.send_header("Retry-After", f"{reply.retry_after:g}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
        self.end_headers()

    def _send_json(self, status: int, payload: dict[str, Any], reply: Reply | None = None) -> None:
        data = json.dumps(payload).encode()
        self._start(status, "application/json", reply, Content_Length=str(len(data)))
        self.wfile.write(data)

    def _hold(self, reply: Reply) -> None:
        if reply.hold is not None:
            self.server.owner.streaming.set()
            reply.hold.wait()

    # -- what each API answers ---------------------------------------------------------

    def request_id(self, served: int) -> tuple[str, str]:
        """The request-id header of the ``served``-th response."""
        raise NotImplementedError

    def _send_error_reply(self, reply: Reply) -> None:
        raise NotImplementedError

    def _complete(self, number: int, body: dict[str, Any], reply: Reply) -> None:
        raise NotImplementedError

    def _stream(self, number: int, body: dict[str, Any], reply: Reply) -> None:
        raise NotImplementedError

    def _write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk; wfile is unbuffered, so it leaves at once."""
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))


class ScriptedServer:
    """A scripted server on 127.0.0.1, answering from a script of Replies.

    ``requests`` and ``headers`` record every chat-completion request as it arrives (the
    parsed JSON body; the headers with lower-case names, e.g. ``"authorization"``), before
    it is answered; ``GET /v1/models`` is not recorded. ``handler``, when set, is called
    with each body and its Reply is used instead of the script. Everything is thread-safe.
    """

    handler_class: type[ScriptedHandler] = ScriptedHandler
    #: What ``base_url`` ends with (the openai client wants "/v1", anthropic's nothing).
    url_suffix = ""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.handler: Callable[[dict[str, Any]], Reply] | None = None
        # Set when a held reply has sent its first chunk(s) and blocks; clear it to reuse.
        self.streaming = threading.Event()
        # Responses the client went away from before they were whole (it closed the stream).
        self.disconnects = 0
        self.disconnected = threading.Event()
        self._script: collections.deque[Reply] = collections.deque()
        self._holds: list[threading.Event] = []
        self._condition = threading.Condition()
        self._responses = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port and serve in a daemon thread; sets ``base_url``."""
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer(self)
        port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}{self.url_suffix}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held replies, stop serving and close every open connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.release()
        httpd.shutdown()
        httpd.server_close()
        with httpd.connections_lock:
            connections = list(httpd.connections)
        for connection in connections:  # idle keep-alive connections would serve on
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting -------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Append replies to the FIFO; each chat-completion request pops the next one."""
        with self._condition:
            self._script.extend(replies)
            self._holds.extend(reply.hold for reply in replies if reply.hold is not None)

    @property
    def pending(self) -> int:
        """How many scripted replies no request has taken yet."""
        with self._condition:
            return len(self._script)

    def release(self) -> None:
        """Set the ``hold`` event of every held reply, scripted or returned by ``handler``."""
        with self._condition:
            holds = list(self._holds)
        for hold in holds:
            hold.set()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` chat-completion requests arrived; return them.

        Raises TimeoutError after ``timeout`` seconds.
        """
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(
                    f"{type(self).__name__}: {len(self.requests)} of {n} requests arrived "
                    f"in {timeout}s"
                )
            return list(self.requests)

    # -- called by the handler -------------------------------------------------------

    def _take(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Reply]:
        """Record a request and choose its Reply: handler, else script, else an error."""
        with self._condition:
            self.requests.append(body)
            self.headers.append(headers)
            number = len(self.requests)
            self._condition.notify_all()
            handler = self.handler
            reply = self._script.popleft() if handler is None and self._script else None
        if handler is not None:
            try:
                reply = handler(body)
                if not isinstance(reply, Reply):
                    raise TypeError(f"handler returned {reply!r}, not a Reply")
            except Exception as exc:
                reply = self._failure(f"the handler raised {exc!r}", "handler_error")
            if reply.hold is not None:
                with self._condition:
                    self._holds.append(reply.hold)
        if reply is None:
            reply = self._failure(
                f"the script ran out (request {number} found no Reply; call server.script(...) "
                "first)",
                "script_exhausted",
            )
        return number, reply

    def _failure(self, message: str, code: str) -> Reply:
        """The 500 a request gets when the test's script or handler fails it."""
        return Reply(status=500, error_message=f"{type(self).__name__}: {message}", error_code=code)

    def _client_left(self) -> None:
        with self._condition:
            self.disconnects += 1
        self.disconnected.set()

    def _served(self) -> int:
        with self._condition:
            self._responses += 1
            return self._responses
