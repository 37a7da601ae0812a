"""agentflow: durable AI agent runs for Django on Celery.

This module is the only public face. Names that need the app registry (models and
everything that touches them) load on first access, so importing ``agentflow`` from a
settings file or an ``agents.py`` module is safe.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from agentflow._definitions import AgentDefinition, ToolDefinition, agent, tool
from agentflow.exceptions import (
    AgentflowError,
    AlreadyDecided,
    ApprovalNotFound,
    BudgetExceeded,
    InvalidInput,
    InvalidState,
    ModelError,
    ModelRefused,
    ModelUnavailable,
    NonDeterminismError,
    PayloadError,
    PolicyDenied,
    RunNotFound,
    ToolArgumentError,
    ToolError,
    UnknownAgent,
    UnknownModel,
    UnknownTool,
)
from agentflow.llm._results import LLMResult, TokenUsage

_LAZY = {
    "RunContext": "agentflow._engine.context",
    "ReplayReport": "agentflow._engine.replay",
    "start": "agentflow._api",
    "wait": "agentflow._api",
    "signal": "agentflow._api",
    "cancel": "agentflow._api",
    "replay": "agentflow._api",
    "get_run": "agentflow._api",
    "approve": "agentflow._api",
    "reject": "agentflow._api",
    "resume": "agentflow._api",
    "fork": "agentflow._api",
    "compare": "agentflow._api",
    "RunComparison": "agentflow._engine.compare",
    "schedule": "agentflow.schedules",
    "Decision": "agentflow._engine.decisions",
}

__all__ = [
    "AgentDefinition",
    "AgentflowError",
    "AlreadyDecided",
    "ApprovalNotFound",
    "BudgetExceeded",
    "Decision",
    "InvalidInput",
    "InvalidState",
    "LLMResult",
    "ModelError",
    "ModelRefused",
    "ModelUnavailable",
    "NonDeterminismError",
    "PayloadError",
    "PolicyDenied",
    "ReplayReport",
    "RunComparison",
    "RunContext",
    "RunNotFound",
    "TokenUsage",
    "ToolArgumentError",
    "ToolDefinition",
    "ToolError",
    "UnknownAgent",
    "UnknownModel",
    "UnknownTool",
    "agent",
    "approve",
    "cancel",
    "compare",
    "fork",
    "get_run",
    "reject",
    "replay",
    "resume",
    "schedule",
    "signal",
    "start",
    "tool",
    "wait",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agentflow' has no attribute {name!r}")
