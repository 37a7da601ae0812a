"""Agents and tools of the model-layer tests (imported by ``agents``)."""

from agentflow import RunContext, agent, tool
from tests.testapp.models import Execution


def _executed(key: str) -> None:
    import os

    Execution.objects.create(key=key, pid=os.getpid())


@tool(name="tests.lookup")
def lookup(city: str) -> dict:
    """Look up the weather of a city."""
    _executed(f"lookup:{city}")
    return {"city": city, "temperature": len(city)}


@tool(name="tests.forbidden_tool")
def forbidden_tool(target: str) -> str:
    """A tool a Policy row denies in the tests."""
    _executed(f"forbidden:{target}")
    return "should not run"


@tool(name="tests.before_model")
def before_model(tag: str) -> str:
    _executed(f"before:{tag}")
    return tag


@agent(name="tests.ask_model")
def ask_model(ctx: RunContext, question: str, model: str = "default", max_tokens: int = 64):
    """One tool call, then one model call: the crash test counts both."""
    ctx.call(before_model, tag=question)
    result = ctx.llm([{"role": "user", "content": question}], model=model, max_tokens=max_tokens)
    return {
        "text": result.text,
        "usage": [result.usage.input_tokens, result.usage.output_tokens],
        "cost": str(result.cost),
        "model": result.model,
    }


@agent(name="tests.tool_loop")
def tool_loop(ctx: RunContext, question: str, max_turns: int = 5, max_tokens: int = 32):
    result = ctx.llm_loop(
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
        tools=[lookup, forbidden_tool],
        max_turns=max_turns,
        max_tokens=max_tokens,
    )
    return {"text": result.text, "finish_reason": result.finish_reason}
