"""Turn failures into the errors an agent sees, the first time and on every replay."""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string

from agentflow.exceptions import AgentflowError, PolicyDenied, ToolArgumentError, ToolError
from agentflow.models import Step


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def tool_error(tool: str, where: str, attempts: int, exc: BaseException) -> ToolError:
    """The ``ToolError`` an agent sees when a tool (or a model call) has failed for good."""
    what, fix = f"Tool '{tool}'", "fix the tool"
    if tool.startswith("llm:"):
        what = f"The call to model alias '{tool.removeprefix('llm:')}'"
        fix = "fix the request or the AGENTFLOW['LLM'] setting"
    return ToolError(
        f"{what} failed at {where} after {attempts} attempt(s): "
        f"{type(exc).__name__}: {exc}. Catch agentflow.ToolError in the agent to handle it, "
        f"or {fix} and retry the run.",
        tool=tool,
        error_type=qualified_name(type(exc)),
        attempts=attempts,
    )


def rebuild_exception(kind: str, error: dict[str, Any]) -> BaseException:
    """Recreate the exception a recorded failed step raised, so replay raises it again."""
    type_path, message = error.get("type", ""), error.get("message", "")
    if kind == Step.Kind.CALL and type_path == qualified_name(PolicyDenied):
        return PolicyDenied(message)
    if kind in (Step.Kind.CALL, Step.Kind.LLM):
        cls = ToolArgumentError if type_path == qualified_name(ToolArgumentError) else ToolError
        return cls(
            message,
            tool=error.get("tool", ""),
            error_type=type_path,
            attempts=error.get("attempts", 0),
        )
    if kind == Step.Kind.WAIT:
        return TimeoutError(message)
    try:
        cls = import_string(type_path)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls(message)
    except Exception:  # not importable, or a constructor that wants other arguments
        pass
    return AgentflowError(f"{type_path}: {message}")
