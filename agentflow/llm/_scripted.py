"""A deterministic provider that replays scripted responses: for the demo and tests.

Nothing here is a model. Each answer is chosen by the conversation's turn (how many
assistant messages it already has), so every worker answers a conversation the same way
with no state of its own. Its results say so: ``model`` reads ``scripted:<MODEL>``.

OPTIONS: ``responses``, a list of ``{"text": ..., "tool_calls": [{"name", "arguments"}],
"usage": [input_tokens, output_tokens]}``, one per turn; or ``responder``, the dotted
path of ``fn(messages, tools) -> response`` (same shape) for answers that depend on
the prompt. Text streams word by word.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.utils.module_loading import import_string

from agentflow.exceptions import ModelRefused
from agentflow.llm._base import Delta, Provider, Reply, Request
from agentflow.llm._results import TokenUsage, ToolCall

WORDS = re.compile(r"\S+\s*|\s+")


class ScriptedProvider(Provider):
    """Answers from a script; labelled as scripted wherever its results show."""

    label = "scripted"

    def complete(self, request: Request, on_delta: Delta) -> Reply:
        response = self._response(request)
        text = str(response.get("text") or "")
        for word in WORDS.findall(text):
            on_delta(word)
        calls = [
            ToolCall(
                str(call.get("id") or f"call_{turn_of(request.messages)}_{index}"),
                str(call["name"]),
                dict(call.get("arguments") or {}),
            )
            for index, call in enumerate(response.get("tool_calls") or [])
        ]
        usage = response.get("usage") or _estimate(request, text)
        return Reply(
            text,
            calls,
            TokenUsage(int(usage[0]), int(usage[1])),
            f"scripted:{self.model}" if self.model else "scripted",
            "tool_calls" if calls else "stop",
        )

    def _response(self, request: Request) -> dict[str, Any]:
        responder = self.options.get("responder")
        if responder:
            fn = import_string(responder) if isinstance(responder, str) else responder
            return fn(request.messages, [spec.name for spec in request.tools])
        responses = self.options.get("responses") or []
        turn = turn_of(request.messages)
        if turn >= len(responses):
            raise ModelRefused(
                f"the scripted model alias '{self.alias}' has {len(responses)} responses and "
                f"was asked for turn {turn + 1}: add responses to its OPTIONS"
            )
        return responses[turn]


def turn_of(messages: list[dict[str, Any]]) -> int:
    """How many times the model already answered in this conversation."""
    return sum(1 for message in messages if message.get("role") == "assistant")


def _estimate(request: Request, text: str) -> tuple[int, int]:
    """About four characters a token, like most tokenizers on English."""
    prompt = json.dumps(request.messages, default=str)
    return max(1, len(prompt) // 4), max(1, len(text) // 4)
