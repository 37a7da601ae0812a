"""``RunContext``: the ``ctx`` an agent receives, a façade over the run's journal.

Each method is one operation, implemented in its own module under ``engine/ops``; every
one takes the next position from the ``Journal``, which answers recorded positions from
history and records new ones.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils.dateparse import parse_datetime

from agentflow import _registry as registry
from agentflow._definitions import ToolDefinition
from agentflow._engine.decisions import Decision
from agentflow._engine.journal import EndOfHistory, Journal
from agentflow._engine.ops import approval, fan_out, signals, steps, timers, tools
from agentflow._engine.ops import llm as model_call
from agentflow._engine.ops import llm_loop as model_loop
from agentflow._engine.state import step_rows
from agentflow.exceptions import NonDeterminismError, ToolArgumentError
from agentflow.llm._results import LLMResult
from agentflow.models import Step, clock

if TYPE_CHECKING:
    from agentflow._engine.leases import Lease
    from agentflow.models import Run

__all__ = ["EndOfHistory", "RunContext"]


class RunContext:
    """The agent's handle on its run. Agent code must be deterministic between calls."""

    def __init__(
        self,
        run: Run,
        history: dict[int, step_rows.StepRecord],
        *,
        lease: Lease | None = None,
    ) -> None:
        self.run = run
        self.journal = Journal(run, history, lease=lease)

    @property
    def position(self) -> int:
        """The position the next call will take."""
        return self.journal.position

    @property
    def idempotency_key(self) -> str:
        """The stable key of the ctx.step in progress, else of the next position."""
        return str(self.journal.current_key)

    @property
    def diverged(self) -> NonDeterminismError | None:
        """The divergence from history this advance met, if any (the run fails with it)."""
        return self.journal.diverged

    # -- operations -----------------------------------------------------------------

    def step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once and memoize its (JSON) result."""
        return steps.step(self.journal, fn, args, kwargs)

    def call(self, tool: ToolDefinition | str, /, **args: Any) -> Any:
        """Call a tool durably; its failure after retries raises ``ToolError`` here."""
        return tools.call(self.journal, _tool(tool), args)

    def map(
        self,
        tool: ToolDefinition | str,
        items: list[dict[str, Any]],
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Call ``tool`` once per kwargs dict in ``items``, in parallel; results in item order.

        With ``return_exceptions=False`` the first failure (after every call has finished)
        raises ``ToolError`` listing each failed index; with True, a failed call's
        ``ToolError`` stands in its slot.
        """
        definition = _tool(tool)
        items = list(items)
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ToolArgumentError(
                    f"ctx.map({definition.name}) item {index} is {type(item).__name__}, not a "
                    "dict of keyword arguments",
                    tool=definition.name,
                )
        calls = [(definition, item) for item in items]
        return fan_out.run(self.journal, Step.Kind.MAP, definition.name, calls, return_exceptions)

    def parallel(
        self,
        calls: list[tuple[ToolDefinition | str, dict[str, Any]]],
        *,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Call several tools in parallel: ``[(tool, kwargs), ...]``; results in order."""
        resolved = [(_tool(tool), dict(kwargs)) for tool, kwargs in calls]
        return fan_out.run(
            self.journal, Step.Kind.PARALLEL, "parallel", resolved, return_exceptions
        )

    def llm(
        self,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        tools: list[ToolDefinition | str] | None = None,
        **params: Any,
    ) -> LLMResult:
        """Ask the model of alias ``model`` (``"default"``) once, as a durable step.

        ``messages`` are Chat Completions messages; ``tools`` are offered with their JSON
        Schemas (the model's calls come back in ``.tool_calls``, not run); ``params``
        (``max_tokens``, ``temperature``...) go to the server. On replay the recorded
        ``LLMResult`` comes back and the model is not asked again. A failure after its
        retries raises ``ToolError`` here.
        """
        resolved = [_tool(tool) for tool in tools or []]
        return model_call.complete(
            self.journal, messages, model=model, tools=resolved, params=params
        )

    def llm_loop(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[ToolDefinition | str],
        model: str | None = None,
        max_turns: int = 20,
        **params: Any,
    ) -> LLMResult:
        """Let the model call ``tools`` until it answers without them, or ``max_turns``.

        Each tool call is a durable tool step with every gate applied; several in a turn
        run as one fan-out. Denials, rejected approvals, argument errors and tool failures
        go back to the model as the call's result. Returns the last ``LLMResult``.
        """
        resolved = [_tool(tool) for tool in tools]
        return model_loop.loop(
            self, messages, tools=resolved, model=model, max_turns=max_turns, params=params
        )

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on a durable timer; no worker is held meanwhile (0 or less: none)."""
        timers.sleep(self.journal, seconds)

    def wait_for(self, name: str, *, timeout: float | None = None) -> Any:
        """Wait for ``agentflow.signal(run, name, data)`` and return its data.

        Raises ``TimeoutError`` if no signal arrives within ``timeout`` seconds.
        """
        return signals.wait_for(self.journal, name, timeout)

    def approve(
        self,
        title: str,
        *,
        data: Any = None,
        schema: Any = None,
        timeout: float | None = None,
        default: str = "reject",
    ) -> Decision:
        """Ask a person; the run waits (holding no worker) and gets their ``Decision``.

        ``schema`` (a JSON Schema dict or a pydantic model) describes data the reviewer
        may fill in or edit; the Decision's ``data`` hands it back (as the model, if one
        was given). After ``timeout`` seconds the ``default`` decision applies.
        """
        return approval.approve(self.journal, title, data, schema, timeout, default)

    def emit(self, type: str, data: Any = None) -> None:
        """Write a durable event of the agent's own, streamed live and kept."""
        steps.emit(self.journal, type, data)

    def now(self) -> datetime:
        """The current time, recorded once and identical on replay.

        Read from the database's clock, as timers are: a run resumed on another worker
        subtracts times that different machines recorded.
        """
        return parse_datetime(steps.recorded_value(self.journal, Step.Kind.NOW, clock.now))

    def random(self) -> float:
        """A random float in [0, 1), recorded once and identical on replay."""
        return steps.recorded_value(self.journal, Step.Kind.RANDOM, _random.random)

    def uuid(self) -> _uuid.UUID:
        """A random UUID, recorded once and identical on replay."""
        return _uuid.UUID(
            steps.recorded_value(self.journal, Step.Kind.UUID, lambda: str(_uuid.uuid4()))
        )

    def patched(self, change_id: str) -> bool:
        """True where the run reaches this point on new code; False on older history.

        Wrap a change to agent code in ``if ctx.patched("id"):`` so runs recorded before
        the change keep replaying the old path.
        """
        return steps.patched(self.journal, change_id)


def _tool(tool: ToolDefinition | str) -> ToolDefinition:
    return tool if isinstance(tool, ToolDefinition) else registry.get_tool(tool)
