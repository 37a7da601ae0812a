"""OpenTelemetry spans for runs, steps, tool and model calls; a no-op without OpenTelemetry.

Install ``django-agentflow[otel]`` and configure an SDK (a ``TracerProvider`` with an
exporter) as for any other library: agentflow only uses the API, so with the API alone,
or with nothing installed, every function here costs next to nothing.

A run's trace crosses the Celery hop: a message agentflow sends carries the trace context
that was current when the engine decided to send it (``carrier``), and the task that
receives it continues that trace (``continued``). ``agentflow.start`` inside a request's
span therefore links the run's advances, steps and tool calls to that request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # the extra is not installed: spans are no-ops
    trace = None

# A proxy: it follows the tracer provider the site sets, even one set after this import.
_tracer = None if trace is None else trace.get_tracer("agentflow")

RUN_ID = "agentflow.run_id"
POSITION = "agentflow.position"
INDEX = "agentflow.index"  # a fan-out child's place in its fan-out
AGENT = "agentflow.agent"
TOOL = "agentflow.tool"
STEP = "agentflow.step"
MODEL = "agentflow.model"
ATTEMPT = "agentflow.attempt"
OUTCOME = "agentflow.outcome"
# The W3C trace context headers the propagator writes (traceparent, tracestate, baggage).
HEADERS = ("traceparent", "tracestate", "baggage")


def enabled() -> bool:
    """Whether the OpenTelemetry API is importable (an SDK may still be unconfigured)."""
    return trace is not None


def configured() -> bool:
    """Whether a tracer provider is set: until then, spans are skipped, not made no-op."""
    return trace is not None and not isinstance(
        trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    )


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A context manager that opens span ``name`` as the current span; yields it or None.

    An exception that escapes marks the span as an error, as OpenTelemetry does.
    """
    if _tracer is None or not configured():
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(
        name, attributes={k: _attribute(v) for k, v in (attributes or {}).items()}
    )


def annotate(current: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to the span ``span()`` yielded (a no-op when it yielded None)."""
    if current is not None and current.is_recording():
        current.set_attributes({k: _attribute(v) for k, v in attributes.items()})


def failed(current: Any, exc: BaseException) -> None:
    """Mark a span as failed by ``exc`` when the engine handles the exception itself."""
    if current is not None and current.is_recording():
        current.record_exception(exc)
        current.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def current() -> Any:
    """The current span, for ``annotate`` (None without a tracer provider)."""
    return trace.get_current_span() if configured() else None


def carrier() -> dict[str, str]:
    """The current trace context as message headers ({} when there is none)."""
    if not configured():
        return {}
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextlib.contextmanager
def continued(request: Any) -> Iterator[None]:
    """Make the trace context a Celery task's message carries the current one."""
    if not configured():
        yield
        return
    headers = {name: value for name in HEADERS if (value := _header(request, name))}
    if not headers:
        yield
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


def _header(request: Any, name: str) -> str | None:
    """A custom message header: on the request itself (protocol 2) or in ``headers``."""
    value = request.get(name) if hasattr(request, "get") else None
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value if isinstance(value, str) else None


def _attribute(value: Any) -> Any:
    """Span attributes take str, bool, int and float: anything else goes as text."""
    return value if isinstance(value, (str, bool, int, float)) else str(value)
