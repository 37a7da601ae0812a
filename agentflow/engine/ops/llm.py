"""``ctx.llm``: a model call as a durable step.

The call runs through the same attempt pipeline as a tool (``attempts.Attempt``): its
budget is reserved before it (an estimate from the prompt, ``max_tokens`` and
``PRICES``) and settled with the usage the server reports; rate limits, overloads,
timeouts and cut streams retry with backoff and ``Retry-After``; a refused request fails
at once. Tokens stream live as coalesced ephemeral events. The step stores the whole
``LLMResult`` (and its tokens and cost in their columns), so replay returns it and the
model is not called again.
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from typing import Any

from agentflow import tracing
from agentflow.definitions import ToolDefinition
from agentflow.engine.interrupts import unavailable_as_interrupt
from agentflow.engine.journal import Entry, Journal
from agentflow.engine.ops.tools import ToolCall
from agentflow.engine.ports import publisher
from agentflow.engine.serialize import dumps
from agentflow.exceptions import (
    ModelRefused,
    ModelUnavailable,
    PayloadError,
    ToolArgumentError,
    UnknownModel,
)
from agentflow.gates import budgets
from agentflow.gates.redaction import redact_text
from agentflow.llm import providers
from agentflow.llm.base import Provider, Request, ToolSpec, function_name
from agentflow.llm.results import LLMResult

# Output tokens reserved for a call that sets no max_tokens.
DEFAULT_MAX_TOKENS = 1024
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def complete(
    journal: Journal,
    messages: list[dict[str, Any]],
    *,
    model: str | None,
    tools: list[ToolDefinition] | None,
    params: dict[str, Any],
) -> LLMResult:
    """Ask the model once, durably; a failure after retries raises ``ToolError`` here."""
    provider = providers.get(model)
    request = Request(list(messages), [tool_spec(tool) for tool in tools or []], dict(params))
    what = f"messages of model alias '{provider.alias}'"
    try:
        args_json = dumps(
            {
                "messages": request.messages,
                "tools": [spec.name for spec in request.tools],
                "params": request.params,
            },
            what=what,
            sort_keys=True,
        )
    except PayloadError as exc:
        raise ToolArgumentError(
            f"ctx.llm at run {journal.run.id} position {journal.position} got {what} it "
            f"cannot store: {exc}",
            tool=f"llm:{provider.alias}",
        ) from None
    entry = journal.take("llm", provider.alias, args_json)
    if entry.finished:
        return LLMResult.from_record(journal.replayed(entry.record))
    return ModelCall(journal, entry, provider, request).run()


def tool_spec(tool: ToolDefinition) -> ToolSpec:
    """How a tool is offered to the model: its name, its docstring and its JSON Schema."""
    description = " ".join((tool.fn.__doc__ or "").split())
    return ToolSpec(tool.name, function_name(tool.name), description, tool.json_schema)


def estimate(provider: Provider, request: Request) -> budgets.Usage:
    """What a call may spend: its prompt at ~4 characters a token, and its output limit."""
    prompt = json.dumps(request.messages, default=str) + json.dumps(
        [spec.parameters for spec in request.tools], default=str
    )
    input_tokens = len(prompt) // 4 + 1
    output_tokens = next(
        (int(request.params[name]) for name in OUTPUT_LIMITS if request.params.get(name)),
        int(provider.options.get("max_tokens") or DEFAULT_MAX_TOKENS),
    )
    return budgets.Usage(
        cost=budgets.price(provider.model, input_tokens, output_tokens),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


class ModelCall(ToolCall):
    """A ``ctx.llm`` at a new (or unfinished) position: a tool call whose tool is the model."""

    SPAN = "agentflow.llm"

    def __init__(self, journal: Journal, entry: Entry, provider: Provider, request: Request):
        self.provider, self.request = provider, request
        self.reply: LLMResult | None = None
        super().__init__(journal, entry, model_tool(provider, self._ask), {})

    def run(self) -> Any:
        # Model calls pass no policy or approval: those are the tools' gates (llm_loop).
        return self._attempt({}, usage=estimate(self.provider, self.request))

    def _ask(self) -> dict[str, Any]:
        deltas = Deltas(self.journal.run.id, self.entry.position)
        reply = self.provider.complete(self.request, deltas)
        deltas.flush(final=True)
        cost = budgets.price(
            self.provider.model, reply.usage.input_tokens, reply.usage.output_tokens
        )
        if not cost and reply.model != self.provider.model:
            cost = budgets.price(reply.model, reply.usage.input_tokens, reply.usage.output_tokens)
        self.reply = LLMResult(
            reply.text, reply.tool_calls, reply.usage, cost, reply.model, reply.finish_reason
        )
        tracing.annotate(
            tracing.current(),
            {
                tracing.MODEL: reply.model,
                "gen_ai.request.model": self.provider.model,
                "gen_ai.usage.input_tokens": reply.usage.input_tokens,
                "gen_ai.usage.output_tokens": reply.usage.output_tokens,
            },
        )
        return self.reply.record()

    # -- outcomes: the usage goes to the step's columns and the budgets ----------------

    def succeeded(self, attempt: int, output_json: str) -> Any:
        reply = self.reply
        assert reply is not None
        recorded = super().succeeded(
            attempt,
            output_json,
            usage=(reply.usage.input_tokens, reply.usage.output_tokens, reply.cost),
        )
        actual = budgets.Usage(
            cost=reply.cost,
            input_tokens=reply.usage.input_tokens,
            output_tokens=reply.usage.output_tokens,
        )
        with unavailable_as_interrupt("settling budget"):
            budgets.settle(self.attempt.reservation, actual)
        return recorded

    def committed(self, recorded: Any) -> Any:
        return LLMResult.from_record(recorded)

    def retrying(self, attempt: int, exc: Exception, wake_at: Any) -> Any:
        self._release_if_unbilled(exc)
        return super().retrying(attempt, exc, wake_at)

    def failed(self, attempts: int, exc: BaseException, error: Exception) -> Any:
        self._release_if_unbilled(exc)
        return super().failed(attempts, exc, error)

    def _release_if_unbilled(self, exc: BaseException) -> None:
        """A server that answered with an error status generated nothing: hand back."""
        if isinstance(exc, ModelRefused | ModelUnavailable) and exc.status is not None:
            with unavailable_as_interrupt("releasing budget"):
                budgets.release(self.attempt.reservation)


def model_tool(provider: Provider, ask: Any) -> ToolDefinition:
    """The model as the attempt pipeline sees it: a tool named ``llm:<alias>``.

    OPTIONS ``retries`` (4), ``retry_backoff`` (1 s, doubling) and ``retry_backoff_max``
    (60 s) shape the retries; ``rate_limit`` and ``max_concurrency`` limit the calls
    fleet-wide, as Policy rows for the tool ``llm:<alias>`` also can.
    """
    options = provider.options
    return ToolDefinition(
        fn=ask,
        name=f"llm:{provider.alias}",
        retries=int(options.get("retries", 4)),
        retry_backoff=float(options.get("retry_backoff", 1.0)),
        retry_backoff_max=float(options.get("retry_backoff_max", 60.0)),
        non_retryable=(ModelRefused, UnknownModel),
        rate_limit=options.get("rate_limit"),
        max_concurrency=options.get("max_concurrency"),
        cost=Decimal(0),
    )


class Deltas:
    """A model's text as it streams, published as coalesced ephemeral ``llm.delta`` events.

    At most one event per INTERVAL seconds or CHARS characters. Each is redacted, and
    the last two words are held back until more text comes, so a secret (or a "Bearer"
    and its token) never straddles two events where no pattern would see it whole.
    """

    INTERVAL = 0.05
    CHARS = 400

    def __init__(self, run_id: Any, position: int) -> None:
        self.run_id, self.position = run_id, position
        self.pending = ""
        self.sent_at = time.monotonic()
        self.send = getattr(publisher(), "publish_ephemeral", None)

    def __call__(self, text: str) -> None:
        self.pending += text
        if len(self.pending) >= self.CHARS or time.monotonic() - self.sent_at >= self.INTERVAL:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        cut = len(self.pending) if final else _last_break(self.pending)
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        if not ready or self.send is None:
            return
        self.sent_at = time.monotonic()
        self.send(self.run_id, "llm.delta", {"position": self.position, "text": redact_text(ready)})


def _last_break(text: str) -> int:
    """Where the text may be cut: before its last two words (a "Bearer <token>" stays whole)."""
    match = _TAIL.search(text)
    return match.start() if match else 0


_TAIL = re.compile(r"\S+\s+\S*$|\S*$")
