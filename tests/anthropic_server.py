"""A scripted Anthropic Messages API server for tests.

Why: the engine's model calls through the official ``anthropic`` client (its retries, SSE
parsing, stream accumulator and error classes) should be tested against real HTTP,
without a network or a paid account. It is the Anthropic twin of ``tests/openai_server.py``
and takes the same ``Reply`` and ``ToolCall`` scripts, so one test can drive either. Each
``POST /v1/messages`` pops the next scripted ``Reply``; the server answers with the
``message`` JSON or the SSE event stream Anthropic would send, or with an Anthropic error,
a stream cut in the middle, or a reply held until the test releases it (so a test can
SIGKILL a worker mid-stream deterministically).

Usage::

    with AnthropicServer() as server:
        server.script(Reply("Hello world"), Reply(status=529))
        client = anthropic.Anthropic(
            base_url=server.base_url, api_key="sk-ant-test", max_retries=0
        )
        ...
        assert server.requests[0]["max_tokens"] == 256

Note ``base_url`` has no ``/v1`` (``http://127.0.0.1:PORT``): the anthropic client adds
``/v1/messages`` itself, unlike the openai client, which wants ``.../v1``.

How a ``Reply`` maps onto the Messages API:
  ``text`` becomes a ``text`` block (index 0; also sent, empty, when the reply has neither
  text nor tool calls), each ``ToolCall`` a ``tool_use`` block after it, its ``arguments``
  as ``input`` (a str is parsed; streamed, it is sent verbatim as ``partial_json``, so
  invalid JSON can be tested). ``usage`` is (input_tokens, output_tokens), by default
  (10, text deltas + tool calls), as in the OpenAI server. ``finish_reason`` is the
  ``stop_reason``: by default "tool_use" with tool calls, else "end_turn"; OpenAI's names
  ("stop", "tool_calls", "length") are translated. ``error_type`` is ``error.type``
  (default per status, see ``_ERROR_TYPES``); ``error_code``, if given, is sent as
  ``error.details.error_code``, which this client maps to specific error classes.

Streaming sends ``event: <type>`` / ``data: <json>`` pairs: message_start (usage with the
input tokens and ``output_tokens`` 1, or 0 for an empty reply), then per block
content_block_start, content_block_delta..., content_block_stop (a ``ping`` after the
first start, as Anthropic does), then message_delta (stop_reason; usage.output_tokens)
and message_stop. Text deltas are ``Reply.deltas()``; a tool_use block streams
``input_json_delta`` fragments of 8 characters, after an empty first one, as Anthropic
sends. ``cut_after`` / ``hold_after`` count content_block_delta events (text and JSON).

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

__all__ = ["MODEL_ID", "AnthropicServer", "Reply", "ToolCall", "anthropic_server"]

MODEL_ID = "claude-test"
"""The one model ``GET /v1/models`` lists, and the model echoed when a request names none."""

# error.type of the body Anthropic sends for a status, when the Reply names none.
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# OpenAI finish_reason -> Anthropic stop_reason, so one Reply script fits both servers.
_STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}

_JSON_FRAGMENT = 8  # characters of tool input JSON per input_json_delta


def stop_reason(reply: Reply) -> str:
    """The ``stop_reason`` a reply ends with (translating OpenAI's finish_reason names)."""
    if reply.finish_reason is None:
        return "tool_use" if reply.tool_calls else "end_turn"
    return _STOP_REASONS.get(reply.finish_reason, reply.finish_reason)


def _token_counts(reply: Reply) -> tuple[int, int]:
    usage = reply.token_usage()  # the same default as the OpenAI server
    return usage["prompt_tokens"], usage["completion_tokens"]


def _has_text_block(reply: Reply) -> bool:
    return bool(reply.text) or not reply.tool_calls


def _tool_id(number: int, index: int, call: ToolCall) -> str:
    return call.id or f"toolu_test{number:06d}_{index}"


class _Handler(ScriptedHandler):
    post_path = "/v1/messages"

    # -- routing ---------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        model = {
            "type": "model",
            "id": MODEL_ID,
            "display_name": "Claude Test",
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }
        if path == "/v1/models":
            page = {"data": [model], "has_more": False, "first_id": MODEL_ID, "last_id": MODEL_ID}
            self._guard(lambda: self._send_json(200, page))
        elif path == f"/v1/models/{MODEL_ID}":
            self._guard(lambda: self._send_json(200, model))
        else:
            reply = Reply(status=404, error_message=f"Unknown path {path}")
            self._guard(lambda: self._send_error_reply(reply))

    def request_id(self, served: int) -> tuple[str, str]:
        return "request-id", f"req_test{served:06d}"

    def _send_error_reply(self, reply: Reply) -> None:
        default_type = _ERROR_TYPES.get(
            reply.status, "api_error" if reply.status >= 500 else "invalid_request_error"
        )
        error: dict[str, Any] = {
            "type": reply.error_type or default_type,
            "message": reply.error_message or f"Scripted error (HTTP {reply.status})",
        }
        if reply.error_code is not None:
            error["details"] = {"error_code": reply.error_code}
        self._send_json(reply.status, {"type": "error", "error": error}, reply)

    def _complete(self, number: int, body: dict[str, Any], reply: Reply) -> None:
        content: list[dict[str, Any]] = []
        if _has_text_block(reply):
            content.append({"type": "text", "text": reply.text})
        for index, call in enumerate(reply.tool_calls):
            try:
                arguments = json.loads(call.arguments_json())
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                message = (
                    f"AnthropicServer: ToolCall {call.name!r} arguments are not a JSON object; "
                    "a tool_use input must be one (only a stream can carry broken JSON)"
                )
                self._send_error_reply(Reply(status=500, error_message=message))
                return
            content.append(
                {
                    "type": "tool_use",
                    "id": _tool_id(number, index, call),
                    "name": call.name,
                    "input": arguments,
                }
            )
        input_tokens, output_tokens = _token_counts(reply)
        payload = {
            **_message(number, body),
            "content": content,
            "stop_reason": stop_reason(reply),
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
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
        input_tokens, output_tokens = _token_counts(reply)
        # (event, is a content delta): deltas are what cut_after and hold_after count.
        blocks: list[tuple[dict[str, Any], bool]] = []

        def block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
            blocks.append(({"type": "content_block_start", "index": index, **start}, False))
            if index == 0:
                blocks.append(({"type": "ping"}, False))
            for delta in deltas:
                event = {"type": "content_block_delta", "index": index, "delta": delta}
                blocks.append((event, True))
            blocks.append(({"type": "content_block_stop", "index": index}, False))

        index = 0
        if _has_text_block(reply):
            text_deltas = [{"type": "text_delta", "text": text} for text in reply.deltas()]
            block(0, {"content_block": {"type": "text", "text": ""}}, text_deltas)
            index = 1
        for position, call in enumerate(reply.tool_calls):
            arguments = call.arguments_json()
            fragments = [""] + [
                arguments[start : start + _JSON_FRAGMENT]
                for start in range(0, len(arguments), _JSON_FRAGMENT)
            ]
            tool_use = {
                "type": "tool_use",
                "id": _tool_id(number, position, call),
                "name": call.name,
                "input": {},
            }
            json_deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
            block(index, {"content_block": tool_use}, json_deltas)
            index += 1

        self._start(
            200,
            "text/event-stream; charset=utf-8",
            reply,
            Transfer_Encoding="chunked",
            Cache_Control="no-cache",
        )
        start = {
            **_message(number, body),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": min(output_tokens, 1)},
        }
        self._event({"type": "message_start", "message": start})
        total = sum(is_delta for _, is_delta in blocks)
        hold_at = min(reply.hold_after, total)
        cut_at = None if reply.cut_after is None else min(reply.cut_after, total)
        sent = 0
        for event, is_delta in [*blocks, (None, True)]:  # the None marks the trailer
            if is_delta:
                if sent == hold_at:
                    self._hold(reply)
                if sent == cut_at:
                    raise Cut
            if event is None:
                break
            if is_delta:
                if reply.chunk_delay:
                    time.sleep(reply.chunk_delay)
                sent += 1
            self._event(event)
        self._event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(reply), "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            }
        )
        self._event({"type": "message_stop"})
        self._write_chunk(b"")  # the zero-length chunk that ends the body

    def _event(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self._write_chunk(b"event: %s\ndata: %s\n\n" % (payload["type"].encode(), data))


def _message(number: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"msg_test{number:06d}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model") or MODEL_ID,
        "stop_sequence": None,
    }


class AnthropicServer(ScriptedServer):
    """An Anthropic Messages API server on 127.0.0.1, answering from a script of Replies.

    ``base_url`` is ``http://127.0.0.1:PORT``, without ``/v1``, as the anthropic client
    wants it. ``requests`` and ``headers`` record every ``POST /v1/messages`` as it arrives
    (the parsed JSON body, with ``system``, ``messages``, ``tools``, ``max_tokens``...; the
    headers with lower-case names, e.g. ``"authorization"``, ``"anthropic-version"``;
    ``api_key()`` reads the key from whichever header carried it), before it is answered;
    ``GET /v1/models`` is not recorded. ``handler``, when set, is called with each body
    and its Reply is used instead of the script. Everything is thread-safe.
    """

    handler_class = _Handler

    def api_key(self, index: int = -1) -> str | None:
        """The API key request ``index`` carried, from ``x-api-key`` or a Bearer token.

        Why: which header holds it depends on the client; anthropic 2.15.0 sends
        ``Authorization: Bearer <key>``, older clients and curl examples ``x-api-key``.
        """
        with self._condition:
            headers = self.headers[index]
        if "x-api-key" in headers:
            return headers["x-api-key"]
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    def _failure(self, message: str, code: str) -> Reply:
        # No error code: this client maps Anthropic's codes to classes of their own.
        return Reply(status=500, error_message=f"AnthropicServer: {message}")


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    """A started AnthropicServer, stopped at teardown."""
    with AnthropicServer() as server:
        yield server
