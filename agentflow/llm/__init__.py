"""Model providers and what model calls return (``ctx.llm``, ``ctx.llm_loop``).

Configure them in ``AGENTFLOW["LLM"]`` by alias, as Django configures caches::

    AGENTFLOW = {"LLM": {
        "default": {"BACKEND": "agentflow.llm.OpenAIProvider", "MODEL": "gpt-4.1-mini",
                    "OPTIONS": {"base_url": None, "api_key_env": "OPENAI_API_KEY"}},
    }}

The classes here are imported lazily, so naming one in settings costs nothing until a
model is called, and a missing client package is reported then (and by the check).
"""

from __future__ import annotations

from typing import Any

from agentflow.llm._base import Provider, Reply, Request, ToolSpec
from agentflow.llm._results import LLMResult, TokenUsage, ToolCall

__all__ = [
    "AnthropicProvider",
    "LLMResult",
    "OpenAIProvider",
    "Provider",
    "Reply",
    "Request",
    "ScriptedProvider",
    "TokenUsage",
    "ToolCall",
    "ToolSpec",
]

_BACKENDS = {
    "OpenAIProvider": "agentflow.llm._openai_compatible",
    "AnthropicProvider": "agentflow.llm._anthropic_messages",
    "ScriptedProvider": "agentflow.llm._scripted",
}


def __getattr__(name: str) -> Any:
    if name in _BACKENDS:
        import importlib

        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module 'agentflow.llm' has no attribute {name!r}")
