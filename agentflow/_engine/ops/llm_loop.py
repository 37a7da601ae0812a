"""``ctx.llm_loop``: ask the model, run the tools it calls, feed the results back, repeat.

Every model turn is a ``ctx.llm`` step and every tool call a durable tool step with its
gates (policy, approval, budget, rate limit), so a loop resumes after a crash where it
stopped. Several calls in one turn run as one fan-out. A call the gates deny, an
approval that is rejected, arguments the tool refuses and a tool that fails all go back
to the model as that call's result, so it can adapt; only a budget pause or a
cancellation stops the loop, as they stop any step.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from agentflow._definitions import ToolDefinition
from agentflow.exceptions import AgentflowError, NonDeterminismError
from agentflow.llm._results import LLMResult, ToolCall


class RunContext(Protocol):
    """The three ``ctx`` operations a loop is made of (``engine.context.RunContext``)."""

    def llm(self, messages: list[dict[str, Any]], **options: Any) -> LLMResult: ...

    def call(self, tool: ToolDefinition, /, **args: Any) -> Any: ...

    def parallel(self, calls: list[Any], *, return_exceptions: bool = False) -> list[Any]: ...


def loop(
    ctx: RunContext,
    messages: list[dict[str, Any]],
    *,
    tools: list[ToolDefinition],
    model: str | None,
    max_turns: int,
    params: dict[str, Any],
) -> LLMResult:
    """The model's last answer: one without tool calls, or the one of turn ``max_turns``."""
    if max_turns < 1:
        raise ValueError(f"ctx.llm_loop: max_turns must be 1 or more, not {max_turns!r}")
    by_name = {tool.name: tool for tool in tools}
    conversation = list(messages)
    for turn in range(1, max_turns + 1):
        result = ctx.llm(conversation, model=model, tools=tools, **params)
        if not result.tool_calls or turn == max_turns:
            return result
        conversation.append(result.message())
        answers = _answers(ctx, result.tool_calls, by_name)
        conversation += [
            {"role": "tool", "tool_call_id": call.id, "content": answer}
            for call, answer in zip(result.tool_calls, answers, strict=True)
        ]
    raise AssertionError("unreachable: the last turn returns")


def _answers(
    ctx: RunContext, calls: list[ToolCall], by_name: dict[str, ToolDefinition]
) -> list[str]:
    """Each call's result as the text the model reads back, in the calls' order."""
    answers: list[str | None] = []
    runnable: list[tuple[int, ToolDefinition, dict[str, Any]]] = []
    for index, call in enumerate(calls):
        tool = by_name.get(call.name)
        if tool is None:
            known = ", ".join(sorted(by_name)) or "none"
            answers.append(f"error: there is no tool named {call.name!r} (tools: {known})")
        elif call.invalid:
            answers.append(
                "error: the arguments were not a JSON object that can be stored (no NaN, "
                f"Infinity, out-of-range numbers or NUL characters): {call.invalid[:200]}"
            )
        else:
            answers.append(None)
            runnable.append((index, tool, call.arguments))
    if len(runnable) == 1:
        index, tool, arguments = runnable[0]
        try:
            outcomes: list[Any] = [ctx.call(tool, **arguments)]
        except NonDeterminismError:
            raise
        except AgentflowError as exc:
            outcomes = [exc]
    elif runnable:
        outcomes = ctx.parallel(
            [(tool, arguments) for _, tool, arguments in runnable], return_exceptions=True
        )
    else:
        outcomes = []
    for (index, _, _), outcome in zip(runnable, outcomes, strict=True):
        answers[index] = _as_text(outcome)
    return [answer or "" for answer in answers]


def _as_text(outcome: Any) -> str:
    if isinstance(outcome, BaseException):
        return f"error: {type(outcome).__name__}: {outcome}"
    return outcome if isinstance(outcome, str) else json.dumps(outcome, default=str)
