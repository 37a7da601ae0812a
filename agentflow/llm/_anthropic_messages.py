"""Anthropic's Messages API, on the official ``anthropic`` client (the ``anthropic`` extra).

Conversations arrive in the Chat Completions form every agentflow agent writes; this
module turns them into Messages API requests (``system`` apart, tool calls as
``tool_use`` blocks, tool results as ``tool_result`` blocks) and streams the answer back.
The client's own retries are off: the engine retries durably.

OPTIONS: ``base_url``, ``api_key_env`` (``ANTHROPIC_API_KEY``) or ``api_key``, ``timeout``
(60, each read), ``deadline`` (600, the whole call), ``max_tokens`` (1024, which the
Messages API requires) and ``params``.
"""

from __future__ import annotations

import contextlib
import json
from functools import cached_property
from typing import Any

from agentflow.exceptions import ModelRefused, ModelUnavailable
from agentflow.llm._base import (
    Delta,
    Provider,
    Reply,
    Request,
    broke_off,
    parse_arguments,
    server_message,
)
from agentflow.llm._openai_compatible import REFUSED
from agentflow.llm._results import TokenUsage, ToolCall
from agentflow.llm._retry_after import retry_after_seconds

DEFAULT_MAX_TOKENS = 1024


class AnthropicProvider(Provider):
    """Claude models through the Messages API."""

    api_key_env = "ANTHROPIC_API_KEY"

    @cached_property
    def client(self) -> Any:
        try:
            import anthropic
        except ImportError as exc:
            raise ModelRefused(
                f"model alias '{self.alias}' needs the anthropic package: "
                "pip install 'django-agentflow[anthropic]'"
            ) from exc
        return anthropic.Anthropic(
            base_url=self.options.get("base_url"),
            api_key=self.api_key or "unset",
            timeout=float(self.options.get("timeout", 60)),
            max_retries=0,
        )

    def complete(self, request: Request, on_delta: Delta) -> Reply:
        import anthropic

        system, messages = to_messages(request.messages)
        params = {**self.options.get("params", {}), **request.params}
        params.setdefault("max_tokens", self.options.get("max_tokens") or DEFAULT_MAX_TOKENS)
        for alias in ("max_completion_tokens", "max_output_tokens"):
            if alias in params:
                params["max_tokens"] = params.pop(alias)
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            **params,
        }
        if system:
            arguments["system"] = system
        if request.tools:
            arguments["tools"] = [
                {
                    "name": spec.function,
                    "description": spec.description,
                    "input_schema": spec.parameters,
                }
                for spec in request.tools
            ]
        where = f"model alias '{self.alias}' ({self.model})"
        ends_at = self.ends_at()
        try:
            # Closed however the reading ends, so a stream given up on is not left open.
            with contextlib.closing(self.client.messages.create(**arguments)) as stream:
                return self._read(request, self.watched(stream, request, ends_at), on_delta)
        except anthropic.APIStatusError as exc:
            status, message = exc.status_code, self.without_key(server_message(exc))
            if status in REFUSED:
                raise ModelRefused(
                    f"{where} refused the request with HTTP {status}: {message}", status=status
                ) from None
            raise ModelUnavailable(
                f"{where} answered HTTP {status}: {message}",
                status=status,
                retry_after=retry_after_seconds(exc.response.headers),
            ) from None
        except Exception as exc:
            if not isinstance(exc, anthropic.APIConnectionError) and not broke_off(exc):
                raise
            raise ModelUnavailable(
                f"{where} could not be reached, or its stream broke off: "
                f"{type(exc).__name__}: {self.without_key(str(exc))}"
            ) from None

    def _read(self, request: Request, stream: Any, on_delta: Delta) -> Reply:
        text: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        input_tokens = output_tokens = 0
        model, stop, stopped = self.model, "", False
        for event in stream:
            kind = event.type
            if kind == "message_start":
                model = event.message.model or model
                usage = event.message.usage
                input_tokens = usage.input_tokens or 0
                output_tokens = usage.output_tokens or 0
            elif kind == "content_block_start":
                block = event.content_block
                if block.type == "tool_use":
                    blocks[event.index] = {"id": block.id, "name": block.name, "json": ""}
            elif kind == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta":
                    text.append(delta.text)
                    on_delta(delta.text)
                elif delta.type == "input_json_delta" and event.index in blocks:
                    blocks[event.index]["json"] += delta.partial_json
            elif kind == "message_delta":
                stop = event.delta.stop_reason or stop
                if event.usage is not None and event.usage.output_tokens is not None:
                    output_tokens = event.usage.output_tokens
            elif kind == "message_stop":
                stopped = True
        if not stopped:
            raise ModelUnavailable(
                f"the stream of model alias '{self.alias}' ({self.model}) ended before message_stop"
            )
        calls = []
        for index in sorted(blocks):
            block = blocks[index]
            parsed, invalid = parse_arguments(block["json"])
            calls.append(ToolCall(block["id"], request.tool_named(block["name"]), parsed, invalid))
        finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
        return Reply(
            "".join(text),
            calls,
            TokenUsage(input_tokens, output_tokens),
            model,
            finish.get(stop, stop),
        )


def to_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Chat Completions messages as (system prompt, Messages API messages)."""
    system: list[str] = []
    converted: list[dict[str, Any]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(_text_of(content))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": _text_of(content),
            }
            if converted and converted[-1]["role"] == "user" and _all_results(converted[-1]):
                converted[-1]["content"].append(result)
            else:
                converted.append({"role": "user", "content": [result]})
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if content:
                blocks.append({"type": "text", "text": _text_of(content)})
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                arguments, _ = parse_arguments(function.get("arguments") or "{}")
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": function.get("name", ""),
                        "input": arguments,
                    }
                )
            converted.append({"role": "assistant", "content": blocks})
        else:
            converted.append({"role": "user", "content": _text_of(content)})
    return "\n\n".join(part for part in system if part), converted


def _all_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return json.dumps(content, default=str)
