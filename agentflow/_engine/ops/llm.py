"""``ctx.llm``: a model call as a durable step.

The call runs through the same attempt pipeline as a tool (``attempts.Attempt``): its
budget is reserved before it (an estimate from the prompt, ``max_tokens`` and
``PRICES``) and settled with the usage the server reports; rate limits, overloads,
timeouts, cut streams and calls past their deadline retry with backoff and
``Retry-After``; a refused request fails at once. Tokens stream live as coalesced
ephemeral events. The step stores the whole ``LLMResult`` (and its tokens and cost in
their columns), so replay returns it and the model is not called again.

Once the server has answered, its usage is checked and settled against the budgets
before anything else that could fail (storing the reply, redacting, publishing): a
reply that cannot be stored was still paid for.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from agentflow import _tracing as tracing
from agentflow import conf
from agentflow._definitions import ToolDefinition
from agentflow._engine.interrupts import LeaseLost, unavailable_as_interrupt
from agentflow._engine.journal import Entry, Journal
from agentflow._engine.ops.tools import ToolStep
from agentflow._engine.ports import publisher
from agentflow._engine.serialize import dumps
from agentflow._guardrails import budgets
from agentflow._guardrails.redaction import redact_text
from agentflow.exceptions import (
    ModelRefused,
    ModelUnavailable,
    PayloadError,
    ToolArgumentError,
    UnknownModel,
)
from agentflow.llm import _providers as providers
from agentflow.llm._base import Provider, Reply, Request, ToolSpec, function_name
from agentflow.llm._results import LLMResult, TokenUsage, ToolCall
from agentflow.models import Event, Step

logger = logging.getLogger("agentflow.llm")

# Output tokens reserved for a call that sets no max_tokens.
DEFAULT_MAX_TOKENS = 1024
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# The largest token count a step records (Step.input_tokens and output_tokens are
# PositiveIntegerFields) and the largest cost (its DecimalField, 14 digits, 6 decimals).
MAX_TOKENS = 2**31 - 1
MAX_COST = Decimal("99999999.999999")


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
    entry = journal.take(Step.Kind.LLM, provider.alias, args_json)
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


class ModelCall(ToolStep):
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
        lease = self.journal.lease
        stop = lease.lost if lease is not None else None  # set by the heartbeat on cancel
        deltas = Deltas(self.journal.run.id, self.entry.position)
        try:
            reply = self.provider.answer(replace(self.request, stop=stop), deltas)
        except ModelUnavailable:
            if stop is not None and stop.is_set():  # nothing to record: the run is not ours
                raise LeaseLost(
                    f"run {self.journal.run.id} was cancelled or taken over during its model "
                    f"call at position {self.entry.position}; the stream was closed"
                ) from None
            raise
        usage = checked_usage(self.provider, reply)
        cost = min(price_of(self.provider, reply.model, usage), MAX_COST)
        # Paid for now, before anything that could fail, whatever happens to the reply next.
        self._settle(
            budgets.Usage(
                cost=cost, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens
            )
        )
        self.reply = LLMResult(
            reply.text, storable_calls(reply), usage, cost, reply.model, reply.finish_reason
        )
        deltas.flush(final=True)
        tracing.annotate(
            tracing.current(),
            {
                tracing.MODEL: reply.model,
                "gen_ai.request.model": self.provider.model,
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
            },
        )
        record = self.reply.record()
        self._refuse_if_too_large(record)
        return record

    def _settle(self, actual: budgets.Usage) -> None:
        """Replace the reserved estimate with the usage the server reported, once."""
        reservation = self.attempt.reservation
        with unavailable_as_interrupt("settling budget"):
            budgets.settle(reservation, actual)
        reservation.usage = actual  # settled: a second settle changes nothing

    def _refuse_if_too_large(self, record: dict[str, Any]) -> None:
        """Refuse (for good: PayloadError) a reply over MAX_PAYLOAD_BYTES, saying its cost."""
        reply = self.reply
        assert reply is not None
        what = (
            f"The reply of model alias '{self.provider.alias}' ({reply.model}) at run "
            f"{self.journal.run.id} position {self.entry.position}"
        )
        limit = conf.setting("MAX_PAYLOAD_BYTES")
        size = len(dumps(record, what=what, limited=False))
        if size > limit:
            raise PayloadError(
                f"{what} is too large to store: {size:,} bytes, over "
                f"AGENTFLOW['MAX_PAYLOAD_BYTES'] = {limit:,}. Its usage was charged "
                f"({reply.usage.input_tokens:,} input and {reply.usage.output_tokens:,} "
                f"output tokens, ${reply.cost}). Ask for a shorter reply (max_tokens) or raise "
                "the limit."
            )

    # -- outcomes: the usage goes to the step's columns (the budgets are settled) --------

    def _columns(self) -> tuple[int, int, Decimal] | None:
        reply = self.reply
        if reply is None:
            return None
        return (reply.usage.input_tokens, reply.usage.output_tokens, reply.cost)

    def succeeded(self, attempt: int, output_json: str) -> Any:
        assert self.reply is not None
        return super().succeeded(attempt, output_json, usage=self._columns())

    def committed(self, recorded: Any) -> Any:
        return LLMResult.from_record(recorded)

    def retrying(self, attempt: int, exc: Exception, wake_at: Any) -> Any:
        self._release_if_unbilled(exc)
        return super().retrying(attempt, exc, wake_at)

    def failed(self, attempts: int, exc: BaseException, error: Exception) -> Any:
        self._release_if_unbilled(exc)
        return super().failed(attempts, exc, error, usage=self._columns())

    def _release_if_unbilled(self, exc: BaseException) -> None:
        """A server that answered with an error status generated nothing: hand back."""
        if isinstance(exc, ModelRefused | ModelUnavailable) and exc.status is not None:
            with unavailable_as_interrupt("releasing budget"):
                budgets.release(self.attempt.reservation)


def checked_usage(provider: Provider, reply: Reply) -> TokenUsage:
    """The usage a server reported, as agentflow records and charges it.

    A count above MAX_TOKENS (2**31 - 1, the step columns' range) is capped there and
    charged as such: no call uses two billion tokens, so the server is wrong, but the
    cap is still far more than any budget allows, so a limit set on tokens or cost
    pauses the run at its next call instead of letting it run on uncharged. A negative
    count, or one that is not a whole number, is refused (``ModelRefused``, not retried:
    the next call would cost again and be counted as badly): what the call cost cannot
    be known, so the estimate reserved before it stays charged (the safe side), and the
    step fails with the reported usage named, for the operator to take up with whoever
    runs the server. Either way nothing reaches a database column it does not fit.
    """
    counts = {"input_tokens": reply.usage.input_tokens, "output_tokens": reply.usage.output_tokens}
    bad = [
        f"{name}={count!r}"
        for name, count in counts.items()
        if isinstance(count, bool) or not isinstance(count, int) or count < 0
    ]
    if bad:
        raise ModelRefused(
            f"model alias '{provider.alias}' ({provider.model}) reported an impossible usage: "
            f"{', '.join(bad)}. Its reply was not used and the estimate reserved for the call "
            "stays charged; check the server (or the gateway in front of it)"
        )
    capped = {name: min(count, MAX_TOKENS) for name, count in counts.items()}
    if capped != counts:
        logger.warning(
            "model alias %r reported %s; recorded and charged as %s",
            provider.alias,
            counts,
            capped,
        )
    return TokenUsage(capped["input_tokens"], capped["output_tokens"])


def price_of(provider: Provider, model: str, usage: TokenUsage) -> Decimal:
    """The call's cost: by the alias's MODEL in PRICES, else by the model the server named."""
    cost = budgets.price(provider.model, usage.input_tokens, usage.output_tokens)
    if not cost and model != provider.model:
        cost = budgets.price(model, usage.input_tokens, usage.output_tokens)
    return cost


def storable_calls(reply: Reply) -> list[ToolCall]:
    """The reply's tool calls, those whose arguments cannot be stored marked ``invalid``.

    Providers already mark arguments that are not a JSON object or hold NaN or infinity;
    this catches the rest (a NUL character, a lone surrogate, nesting too deep), from any
    provider, so they go back to the model as bad arguments instead of failing the run.
    """
    calls = []
    for call in reply.tool_calls:
        if not call.invalid:
            try:
                dumps(call.arguments, what="tool-call arguments")
            except PayloadError as exc:
                try:
                    raw = json.dumps(call.arguments, default=str, ensure_ascii=True)
                except (ValueError, RecursionError):
                    raw = str(exc)
                call = ToolCall(call.id, call.name, {}, raw)
        calls.append(call)
    return calls


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

    At most one event per INTERVAL seconds or CHARS new characters, each redacted. A
    secret may arrive cut across deltas ("sk-abc" then "def..."), and a pattern's match
    may span words ("Bearer <token>", a card number), so no piece is redacted on its own:
    the unsent text is cut only after a space at least HOLD characters before its end (a
    secret still arriving stays in the held-back tail), and only where redacting the two
    sides apart gives what redacting the text whole gives (no match runs across the cut).
    What is held back goes out with a later event, or the last.

    Linear: an attempt redacts the unsent text three times, and that text stays under
    MAX_HOLD plus CHARS characters. Past MAX_HOLD it is sent even without a clean cut,
    redacted whole, so only a match still arriving then, and longer than HOLD, can be cut.
    """

    INTERVAL = 0.05
    CHARS = 400
    HOLD = 64
    MAX_HOLD = 4096

    def __init__(self, run_id: Any, position: int) -> None:
        self.run_id, self.position = run_id, position
        self.pending = ""
        self.fresh = 0  # characters that came since the last attempt
        self.tried_at = time.monotonic()
        self.send = getattr(publisher(), "publish_ephemeral", None)

    def __call__(self, text: str) -> None:
        if self.send is None:  # nobody listens: keep nothing
            return
        self.pending += text
        self.fresh += len(text)
        if self.fresh >= self.CHARS or time.monotonic() - self.tried_at >= self.INTERVAL:
            self.flush()

    def flush(self, *, final: bool = False) -> None:
        """Publish what can be published now; ``final``: all of it (the reply is whole)."""
        self.fresh, self.tried_at = 0, time.monotonic()
        if final:
            ready, self.pending = (redact_text(self.pending) if self.pending else ""), ""
        else:
            ready = self._take_ready()
        if ready:
            self.send(self.run_id, Event.Type.LLM_DELTA, {"position": self.position, "text": ready})

    def _take_ready(self) -> str:
        """The redacted text before a clean cut (taken from ``pending``), or ""."""
        text = self.pending
        limit = len(text) - self.HOLD
        if limit <= 0:
            return ""
        forced = len(text) > self.MAX_HOLD
        cut = max(text.rfind(space, 0, limit) for space in _SPACES) + 1
        if cut <= 0:
            if not forced:
                return ""
            cut = limit
        whole, head = redact_text(text), redact_text(text[:cut])
        if head + redact_text(text[cut:]) == whole:
            self.pending = text[cut:]
            return head
        if not forced:
            return ""  # a match runs across the cut: wait until the cut is past it
        self.pending = ""
        return whole


_SPACES = (" ", "\n", "\t", "\r")
