"""``@agent`` and ``@tool``: turn plain functions into registered, schema-checked definitions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, overload

from pydantic import BaseModel

from agentflow import _registry as registry
from agentflow import _schema as schema
from agentflow._engine import titles
from agentflow.exceptions import InvalidInput

IDEMPOTENCY_PARAM = "idempotency_key"
# A keyword-only parameter of this name gets a threading.Event, set when the run is
# cancelled or taken over while the tool runs: the runtime's way of telling it to stop.
STOP_PARAM = "stop_requested"
RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def default_name(fn: Callable[..., Any]) -> str:
    """``<app label>.<function name>``, the app being the installed app holding ``fn``."""
    from django.apps import apps

    config = apps.get_containing_app_config(fn.__module__) if apps.apps_ready else None
    # Outside an installed app, fall back to the package holding the module.
    label = config.label if config else fn.__module__.split(".")[-2:][0]
    return f"{label}.{fn.__name__}"


def parse_rate(rate: str) -> tuple[int, int]:
    """Parse ``"N/s|m|h|d"`` into (count, period in seconds)."""
    count, _, unit = rate.partition("/")
    if not count.strip().isdigit() or int(count) <= 0 or unit.strip() not in RATE_UNITS:
        raise ValueError(f"rate_limit {rate!r} must look like '5/s', '100/m', '1000/h' or '10/d'")
    return int(count), RATE_UNITS[unit.strip()]


@dataclass(eq=False)
class ToolDefinition:
    """A registered tool: its function, its argument schema and its execution options."""

    fn: Callable[..., Any]
    name: str
    retries: int = 3
    timeout: float | None = None
    retry_backoff: float = 1.0
    retry_backoff_max: float = 300.0
    non_retryable: tuple[type[BaseException], ...] = ()
    requires_approval: bool = False
    rate_limit: str | None = None
    max_concurrency: int | None = None
    queue: str | None = None
    # Run the body in the step's own transaction: its writes and its record commit together.
    atomic: bool = False
    # Fixed cost of one call in US dollars, counted against budgets.
    cost: Decimal = Decimal(0)
    # The title of an approval of one call: a format string of the call's arguments.
    approval_title: str | None = None
    args_model: type[BaseModel] = field(default=BaseModel, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, outside any run (no durability, no checks)."""
        return self.fn(*args, **kwargs)

    @functools.cached_property
    def takes_idempotency_key(self) -> bool:
        """Whether the runtime must pass the step's stable key to the function."""
        return self._keyword_only(IDEMPOTENCY_PARAM)

    @functools.cached_property
    def takes_stop_requested(self) -> bool:
        """Whether the runtime must pass the function the event that asks it to stop."""
        return self._keyword_only(STOP_PARAM)

    def _keyword_only(self, name: str) -> bool:
        param = inspect.signature(self.fn).parameters.get(name)
        return param is not None and param.kind is param.KEYWORD_ONLY

    @functools.cached_property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the tool's arguments."""
        return self.args_model.model_json_schema()

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Return the converted arguments; raise ``ValueError`` naming each bad field."""
        return schema.validate(self.args_model, args)

    @functools.cached_property
    def title_template(self) -> titles.Template | None:
        """``approval_title`` parsed (checked when the tool was declared)."""
        if self.approval_title is None:
            return None
        return titles.parse_template(self.name, self.approval_title)

    def approval_title_for(self, args: Any) -> str:
        """The title of an approval of a call with ``args`` (already redacted)."""
        return titles.approval_title(self.name, self.title_template, args)


@dataclass(eq=False)
class AgentDefinition:
    """A registered agent version: ``fn(ctx, **input)``."""

    fn: Callable[..., Any]
    name: str
    version: str
    input_model: type[BaseModel] = field(default=BaseModel, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def validate_input(self, value: Any) -> dict[str, Any]:
        """Check a run's input against the agent's parameters."""
        try:
            schema.validate(self.input_model, value)
        except ValueError as exc:
            raise InvalidInput(
                f"Input for agent '{self.name}' (version {self.version}) is invalid: {exc}. "
                f"Expected an object with: {', '.join(self.input_model.model_fields) or 'nothing'}."
            ) from None
        return value


@overload
def tool(fn: Callable[..., Any], /) -> ToolDefinition: ...
@overload
def tool(
    *,
    name: str | None = None,
    retries: int = 3,
    timeout: float | None = None,
    retry_backoff: float = 1.0,
    retry_backoff_max: float = 300.0,
    non_retryable: tuple[type[BaseException], ...] = (),
    requires_approval: bool = False,
    rate_limit: str | None = None,
    max_concurrency: int | None = None,
    queue: str | None = None,
    atomic: bool = False,
    cost: Decimal | str | float = 0,
    approval_title: str | None = None,
) -> Callable[[Callable[..., Any]], ToolDefinition]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any):
    """Register a function as a tool that agents call with ``ctx.call``.

    A keyword-only parameter named ``idempotency_key`` receives the step's stable key, and
    one named ``stop_requested`` a ``threading.Event`` that is set when the run is cancelled
    (or taken over) while the tool runs. Arguments are validated against the JSON Schema
    of the type hints before each call.

    ``atomic=True`` runs the body inside a transaction on agentflow's database, and the
    step's completion record commits in that same transaction: the tool's writes to that
    database happen exactly once, with no idempotency key, and a failed or killed attempt
    leaves none of them behind. ``queue`` runs the tool's calls on that Celery queue.

    ``approval_title="Pay {invoice_id}: {amount}"`` titles the approvals of its calls with
    their arguments (plain ``{name}`` fields only); without it a title names the tool and
    its first short argument values.
    """

    def decorate(func: Callable[..., Any]) -> ToolDefinition:
        tool_name = name or default_name(func)
        _check_tool_options(tool_name, options)
        model = schema.model_for(
            func, title=f"tool {tool_name}", skip=[IDEMPOTENCY_PARAM, STOP_PARAM]
        )
        definition = ToolDefinition(fn=func, name=tool_name, args_model=model, **options)
        functools.update_wrapper(definition, func)  # type: ignore[arg-type]
        registry.register_tool(definition)
        return definition

    return decorate(fn) if fn is not None else decorate


def agent(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, version: str = "1"):
    """Register ``fn(ctx, **input)`` as an agent version that runs durably.

    Runs stay pinned to the version they started on; keep an old version registered
    (same name, old version string) while runs on it are still in flight.
    """

    def decorate(func: Callable[..., Any]) -> AgentDefinition:
        agent_name = name or default_name(func)
        params = list(inspect.signature(func).parameters)
        if not params:
            raise TypeError(f"agent {agent_name}: the first parameter must be the RunContext (ctx)")
        model = schema.model_for(func, title=f"agent {agent_name}", skip=[params[0]])
        definition = AgentDefinition(
            fn=func, name=agent_name, version=str(version), input_model=model
        )
        functools.update_wrapper(definition, func)  # type: ignore[arg-type]
        registry.register_agent(definition)
        return definition

    return decorate(fn) if fn is not None else decorate


def _check_tool_options(tool_name: str, options: dict[str, Any]) -> None:
    if options.get("retries", 0) < 0:
        raise ValueError(f"tool {tool_name}: retries must be 0 or more")
    timeout = options.get("timeout")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"tool {tool_name}: timeout must be a positive number of seconds")
    if options.get("atomic") and timeout is not None:
        raise ValueError(
            f"tool {tool_name}: atomic=True cannot be combined with timeout. A timeout stops "
            "the body from a signal handler or a helper thread, and neither can end the "
            "database transaction the body shares with its step record. Drop timeout, and "
            "bound the tool's queries with the database's statement_timeout instead."
        )
    queue = options.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        raise ValueError(f"tool {tool_name}: queue must be a non-empty queue name")
    if options.get("rate_limit") is not None:
        parse_rate(options["rate_limit"])
    concurrency = options.get("max_concurrency")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"tool {tool_name}: max_concurrency must be 1 or more")
    if options.get("approval_title") is not None:
        titles.parse_template(tool_name, options["approval_title"])
    if "cost" in options:
        try:
            options["cost"] = Decimal(str(options["cost"]))
        except InvalidOperation:
            raise ValueError(f"tool {tool_name}: cost must be a number of US dollars") from None
        if not options["cost"].is_finite() or options["cost"] < 0:
            raise ValueError(f"tool {tool_name}: cost must be zero or more US dollars")
