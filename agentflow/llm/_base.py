"""The provider protocol: one class per kind of server, configured like Django's caches.

A provider turns one ``Request`` into one ``Reply``, calling ``on_delta`` with each piece
of text as it streams. It raises ``ModelUnavailable`` for what a retry may cure (rate
limits, overloads, timeouts, a cut stream, a call past its deadline) and ``ModelRefused``
for what it cannot (a bad request, a bad key, an unknown model). It keeps no state between
calls: durability, retries, budgets and events are the engine's.

The engine calls ``answer``, which wraps a backend's ``complete``: the API key is taken out
of everything the reply carries and streams, whatever the backend.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from agentflow.exceptions import ModelRefused, ModelUnavailable
from agentflow.llm._results import TokenUsage, ToolCall

Delta = Callable[[str], None]
T = TypeVar("T")

# A call's whole reply must have streamed by then (OPTIONS "deadline", seconds): the
# client's "timeout" bounds each read only, so a trickle of tokens would never end.
DEFAULT_DEADLINE = 600.0
# Shorter API keys are not taken out of text (a local server's "x" would blank every x).
MIN_KEY_LENGTH = 8
KEY_REPLACEMENT = "[redacted]"


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: a function name the API accepts, and its JSON Schema."""

    name: str
    function: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One model call: Chat Completions messages, the tools offered, and extra parameters."""

    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    #: Set when nobody wants the reply any more (its run was cancelled or taken over): a
    #: streaming provider then ends the stream at its next event.
    stop: threading.Event | None = field(default=None, compare=False)

    def tool_named(self, function: str) -> str:
        """The agentflow tool name behind an API function name (itself if none matches)."""
        for spec in self.tools:
            if spec.function == function:
                return spec.name
        return function


@dataclass(frozen=True)
class Reply:
    """What the server answered, before agentflow prices it."""

    text: str
    tool_calls: list[ToolCall]
    usage: TokenUsage
    model: str
    finish_reason: str


class Provider:
    """Base class of model providers. ``OPTIONS`` arrive as keyword ``options``."""

    #: Shown wherever results of this provider appear (the scripted one says it is).
    label = ""
    #: The environment variable that holds the API key, unless OPTIONS name another.
    api_key_env = ""

    def __init__(self, alias: str, model: str, options: dict[str, Any]) -> None:
        self.alias, self.model, self.options = alias, model, dict(options)

    @property
    def api_key(self) -> str:
        """OPTIONS ``api_key``, else the environment variable OPTIONS ``api_key_env`` names."""
        key = self.options.get("api_key")
        if key:
            return str(key)
        return os.environ.get(self.options.get("api_key_env") or self.api_key_env, "")

    def without_key(self, message: str) -> str:
        """``message`` with the API key taken out (servers echo it back in a 401)."""
        key = self.api_key
        return message.replace(key, KEY_REPLACEMENT) if len(key) >= MIN_KEY_LENGTH else message

    def answer(self, request: Request, on_delta: Delta) -> Reply:
        """``complete``, with the API key taken out of the reply, its deltas and its errors.

        A server (or a model told the key) may echo it anywhere; it is replaced before
        anything leaves the provider, so neither the stored step, nor its sealed copy,
        nor a live frame ever holds it. A key cut across two deltas is caught too.
        """
        key = self.api_key
        if len(key) < MIN_KEY_LENGTH:
            return self.complete(request, on_delta)
        deltas = WithoutKey(key, on_delta)
        try:
            reply = self.complete(request, deltas)
        except Exception as exc:
            if exc.args and key in str(exc):
                exc.args = (self.without_key(str(exc)), *exc.args[1:])
            raise
        deltas.flush()
        return replace(
            reply,
            text=self.without_key(reply.text),
            model=self.without_key(reply.model),
            tool_calls=[
                ToolCall(
                    call.id,
                    call.name,
                    _without(key, call.arguments),
                    self.without_key(call.invalid),
                )
                for call in reply.tool_calls
            ],
        )

    def complete(self, request: Request, on_delta: Delta) -> Reply:
        raise NotImplementedError

    @property
    def deadline(self) -> float | None:
        """Seconds a call may take in all (OPTIONS ``deadline``; None: no deadline)."""
        value = self.options.get("deadline", DEFAULT_DEADLINE)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
        raise ModelRefused(
            f"AGENTFLOW['LLM']['{self.alias}']['OPTIONS']['deadline'] must be a number of "
            f"seconds above 0, or None for no deadline, not {value!r}"
        )

    def ends_at(self) -> float | None:
        """When (``time.monotonic()``) a call starting now must be done; None: never.

        Called before the request is sent, so a bad OPTIONS ``deadline`` sends nothing.
        """
        deadline = self.deadline
        return None if deadline is None else time.monotonic() + deadline

    def watched(self, stream: Iterable[T], request: Request, ends_at: float | None) -> Iterator[T]:
        """The events of ``stream`` until ``ends_at`` passes or ``request.stop`` is set.

        Checked between events, so each check costs a clock read and an Event lookup (the
        worker's heartbeat sets ``stop``; nothing here queries the database). Both raise
        ``ModelUnavailable``; the caller closes the stream, so the server sees it end.
        """
        where = f"model alias '{self.alias}' ({self.model})"
        for event in stream:
            if ends_at is not None and time.monotonic() > ends_at:
                raise ModelUnavailable(
                    f"{where} did not finish within its deadline of {self.deadline:g}s "
                    "(OPTIONS 'deadline'): its stream was closed. Raise the deadline for long "
                    "replies, or lower max_tokens"
                )
            if request.stop is not None and request.stop.is_set():
                raise ModelUnavailable(
                    f"{where} was stopped mid-stream: its run was cancelled or taken over"
                )
            yield event


class WithoutKey:
    """``on_delta`` with a key replaced, also when the key arrives cut across deltas.

    The tail of the text that could be the start of the key (at most its length less one
    character) is held back until the next delta shows whether it is, or ``flush``.
    """

    def __init__(self, key: str, on_delta: Delta) -> None:
        self.key, self.on_delta, self.held = key, on_delta, ""

    def __call__(self, text: str) -> None:
        text = (self.held + text).replace(self.key, KEY_REPLACEMENT)
        keep = _start_of(self.key, text)
        self.held = text[len(text) - keep :] if keep else ""
        if len(text) > keep:
            self.on_delta(text[: len(text) - keep])

    def flush(self) -> None:
        """Pass on what was held back (the text ended: it was not the key)."""
        held, self.held = self.held, ""
        if held:
            self.on_delta(held)


def _start_of(key: str, text: str) -> int:
    """The length of the longest end of ``text`` that begins ``key`` (0: none does)."""
    first = len(text) - min(len(key) - 1, len(text))
    at = text.find(key[0], first)
    while at >= 0:  # at most len(key) candidates, each compared once
        if key.startswith(text[at:]):
            return len(text) - at
        at = text.find(key[0], at + 1)
    return 0


def _without(key: str, value: Any) -> Any:
    """A JSON-like value with ``key`` replaced in every string, keys included."""
    if isinstance(value, str):
        return value.replace(key, KEY_REPLACEMENT)
    if isinstance(value, dict):
        return {_without(key, k): _without(key, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(key, item) for item in value]
    return value


_FUNCTION_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def parse_arguments(raw: str) -> tuple[dict[str, Any], str]:
    """A tool call's JSON arguments as a dict, or ({}, the raw text) when they are not one.

    Numbers JSON cannot carry (``NaN``, ``Infinity``, ``1e999``, which Python would read
    as inf) make the arguments bad too: nothing could store them, and the model should
    hear about it as about any malformed arguments.
    """
    try:
        value = json.loads(raw or "{}", parse_float=_finite, parse_constant=_not_json)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        return {}, raw
    return (value, "") if isinstance(value, dict) else ({}, raw)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def function_name(tool_name: str) -> str:
    """A tool name as model APIs accept it (letters, digits, ``_`` and ``-``, 64 at most)."""
    return _FUNCTION_NAME.sub("_", tool_name.replace(".", "__"))[:64]


def server_message(exc: Any) -> str:
    """The message an API error's JSON body carries (``{"error": {"message": ...}}``)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", "") or exc)


def broke_off(exc: BaseException) -> bool:
    """Whether ``exc`` is the HTTP transport's (a stream cut in the middle, a reset).

    The clients wrap most of these, but not all: a stream that breaks while it is being
    read escapes some as the transport's own error (``httpx``, ``httpx2``, ``httpcore``).
    """
    return type(exc).__module__.startswith(("httpx", "httpcore"))
