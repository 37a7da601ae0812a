"""A scripted OpenAI-compatible HTTP server for tests.

Why: the engine's model calls should be tested against real HTTP, through the official
``openai`` client and its retry, streaming and error handling, without a network or a
paid account. Each request to ``POST /v1/chat/completions`` pops the next scripted
``Reply``; the server answers with the JSON or the SSE stream OpenAI would send, or with
an OpenAI-style error, a stream cut in the middle, or a stream held open until the test
releases it (so a test can SIGKILL a worker mid-stream deterministically).

Usage::

    with OpenAIServer() as server:
        server.script(Reply("Hello world"), Reply(status=429, retry_after=1))
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        ...
        assert server.requests[0]["model"] == "gpt-4o-mini"

Stdlib only: a ``ThreadingHTTPServer`` in a daemon thread, bound to 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.scripted_http import Cut, Reply, ScriptedHandler, ScriptedServer, ToolCall

__all__ = ["MODEL_ID", "OpenAIServer", "Reply", "ToolCall", "openai_server"]

MODEL_ID = "gpt-test"
"""The one model ``GET /v1/models`` lists, and the model echoed when a request names none."""

# (type, code) of the error body OpenAI sends for a status, when the Reply names none.
# 529 is not OpenAI's (it is Anthropic's "overloaded"); gateways pass it through.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
    529: ("overloaded_error", "overloaded"),
}

_ARGUMENT_FRAGMENT = 8  # characters of tool-call arguments per streamed chunk


class _Handler(ScriptedHandler):
    post_path = "/v1/chat/completions"

    # -- routing ---------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "agentflow-tests"}
        if path == "/v1/models":
            self._guard(lambda: self._send_json(200, {"object": "list", "data": [model]}))
        elif path == f"/v1/models/{MODEL_ID}":
            self._guard(lambda: self._send_json(200, model))
        else:
            self._guard(lambda: self._send_error_reply(Reply(status=404, error_message=path)))

    def request_id(self, served: int) -> tuple[str, str]:
        return "x-request-id", f"req_{served}"

    def _send_error_reply(self, reply: Reply) -> None:
        default_type, default_code = _ERROR_DEFAULTS.get(
            reply.status,
            ("server_error" if reply.status >= 500 else "invalid_request_error", None),
        )
        error = {
            "message": reply.error_message or f"Scripted error (HTTP {reply.status})",
            "type": reply.error_type or default_type,
            "param": None,
            "code": reply.error_code or default_code,
        }
        self._send_json(reply.status, {"error": error}, reply)

    def _complete(self, number: int, body: dict[str, Any], reply: Reply) -> None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text if reply.text or not reply.tool_calls else None,
            "refusal": None,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id or _call_id(number, index),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for index, call in enumerate(reply.tool_calls)
            ]
        payload = {
            **_envelope(number, body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.resolved_finish_reason(),
                }
            ],
            "usage": reply.token_usage(),
        }
        self._hold(reply)
        if reply.cut_after is None:
            self._send_json(200, payload, reply)
            return
        data = json.dumps(payload).encode()
        self._start(200, "application/json", reply, Content_Length=str(len(data)))
        self.wfile.write(data[: len(data) // 2])
        raise Cut

    def _stream(self, number: int, body: dict[str, Any], reply: Reply) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        envelope = _envelope(number, body, "chat.completion.chunk")
        if include_usage:
            envelope["usage"] = None  # OpenAI sends "usage": null on every other chunk

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**envelope, "choices": [choice]}

        first = {"role": "assistant", "content": "" if reply.text or not reply.tool_calls else None}
        pieces = [chunk({"content": delta}) for delta in reply.deltas()]
        for index, call in enumerate(reply.tool_calls):
            header = {
                "index": index,
                "id": call.id or _call_id(number, index),
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            pieces.append(chunk({"tool_calls": [header]}))
            arguments = call.arguments_json()
            for start in range(0, len(arguments), _ARGUMENT_FRAGMENT):
                fragment = arguments[start : start + _ARGUMENT_FRAGMENT]
                pieces.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
                )

        self._start(
            200,
            "text/event-stream; charset=utf-8",
            reply,
            Transfer_Encoding="chunked",
            Cache_Control="no-cache",
        )
        self._event(chunk({**first, "refusal": None}))
        hold_at = min(reply.hold_after, len(pieces))
        cut_at = None if reply.cut_after is None else min(reply.cut_after, len(pieces))
        for position in range(len(pieces) + 1):
            if position == hold_at:
                self._hold(reply)
            if position == cut_at:
                raise Cut
            if position < len(pieces):
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                self._event(pieces[position])
        self._event(chunk({}, reply.resolved_finish_reason()))
        if include_usage:
            self._event({**envelope, "choices": [], "usage": reply.token_usage()})
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # the zero-length chunk that ends the body

    def _event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")


def _envelope(number: int, body: dict[str, Any], kind: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-test{number:06d}",
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model") or MODEL_ID,
        "system_fingerprint": "fp_test",
    }


def _call_id(number: int, index: int) -> str:
    return f"call_{number:06d}_{index}"


class OpenAIServer(ScriptedServer):
    """An OpenAI-compatible server on 127.0.0.1, answering from a script of Replies.

    ``requests`` and ``headers`` record every chat-completion request as it arrives (the
    parsed JSON body; the headers with lower-case names, e.g. ``"authorization"``), before
    it is answered; ``GET /v1/models`` is not recorded. ``handler``, when set, is called
    with each body and its Reply is used instead of the script. Everything is thread-safe.
    """

    handler_class = _Handler
    url_suffix = "/v1"


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    """A started OpenAIServer, stopped at teardown."""
    with OpenAIServer() as server:
        yield server
