"""OpenTelemetry in a test worker: each process writes its finished spans to a file.

A worker started with ``AGENTFLOW_TEST_SPANS=<path>`` appends one JSON line per span, so
the tracing tests can follow a trace across the Celery hop into another process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init

ENV = "AGENTFLOW_TEST_SPANS"


def install_if_asked() -> None:
    """Called from the test app's ``ready``: a no-op unless the environment asks."""
    if os.environ.get(ENV):
        worker_process_init.connect(_export_to_file, weak=False)


def _export_to_file(**kwargs: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    out = open(os.environ[ENV], "a", buffering=1)  # noqa: SIM115  (the process's lifetime)
    exporter = ConsoleSpanExporter(
        out=out, formatter=lambda span: json.dumps(json.loads(span.to_json())) + "\n"
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def read_spans(path: Path) -> list[dict[str, Any]]:
    """The spans the workers wrote so far, as the SDK's JSON dicts."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
