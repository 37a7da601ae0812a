"""The provider protocol: one class per kind of server, configured like Django's caches.

A provider turns one ``Request`` into one ``Reply``, calling ``on_delta`` with each piece
of text as it streams. It raises ``ModelUnavailable`` for what a retry may cure (rate
limits, overloads, timeouts, a cut stream) and ``ModelRefused`` for what it cannot (a bad
request, a bad key, an unknown model). It keeps no state between calls: durability,
retries, budgets and events are the engine's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentflow.llm.results import TokenUsage, ToolCall

Delta = Callable[[str], None]


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
        return os.environ.get(self.options.get("api_key_env") or self.api_key_env, "")

    def without_key(self, message: str) -> str:
        """``message`` with the API key taken out (servers echo it back in a 401)."""
        key = self.api_key
        return message.replace(key, "[redacted]") if len(key) >= 8 else message

    def complete(self, request: Request, on_delta: Delta) -> Reply:
        raise NotImplementedError


_FUNCTION_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def parse_arguments(raw: str) -> tuple[dict[str, Any], str]:
    """A tool call's JSON arguments as a dict, or ({}, the raw text) when they are not one."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {}, raw
    return (value, "") if isinstance(value, dict) else ({}, raw)


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
