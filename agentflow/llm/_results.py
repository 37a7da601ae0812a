"""What a model call returns, and how it is recorded so that replay returns the same."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class TokenUsage:
    """Tokens as the server reported them (0 when it reported none)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ToolCall:
    """One tool call the model asked for: ``name`` is the agentflow tool name."""

    id: str
    name: str
    arguments: dict[str, Any]
    #: The raw arguments when the model sent something that is not a JSON object.
    invalid: str = ""


@dataclass(frozen=True)
class LLMResult:
    """A model's answer: its text, the tool calls it asked for, its usage and cost."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Decimal = Decimal(0)
    model: str = ""
    finish_reason: str = ""

    def message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation (Chat Completions form)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in self.tool_calls
            ]
        return message

    def record(self) -> dict[str, Any]:
        """The JSON the step stores as its output (cost as a string: it is a Decimal)."""
        return {
            "text": self.text,
            "tool_calls": [
                {"id": call.id, "name": call.name, "arguments": call.arguments}
                | ({"invalid": call.invalid} if call.invalid else {})
                for call in self.tool_calls
            ],
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "cost": str(self.cost),
            "model": self.model,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LLMResult:
        """The result a recorded step output describes (the inverse of ``record``)."""
        usage = record.get("usage") or {}
        return cls(
            text=record.get("text") or "",
            tool_calls=[
                ToolCall(
                    call["id"], call["name"], call.get("arguments") or {}, call.get("invalid", "")
                )
                for call in record.get("tool_calls") or []
            ],
            usage=TokenUsage(
                int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
            ),
            cost=Decimal(str(record.get("cost") or 0)),
            model=record.get("model") or "",
            finish_reason=record.get("finish_reason") or "",
        )
