"""``ctx.step``, ``ctx.emit``, the recorded values (now, random, uuid) and ``ctx.patched``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentflow import _tracing as tracing
from agentflow._engine.journal import Journal
from agentflow._engine.serialize import check_text, dumps, error_record
from agentflow._engine.state import step_rows
from agentflow.models import Event, Step, clock

RESERVED_EVENT_PREFIXES = ("run.", "step.", "signal.")
# Names agent code passes that are stored in text columns: Step.name, Event.type.
MAX_NAME_CHARS = Step._meta.get_field("name").max_length
MAX_EVENT_TYPE_CHARS = Event._meta.get_field("type").max_length


def step(journal: Journal, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """Run ``fn(*args, **kwargs)`` once and memoize its (JSON) result."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    args_json = dumps([list(args), kwargs], what=f"arguments of step {name}", sort_keys=True)
    entry = journal.take(Step.Kind.STEP, name, args_json)
    if entry.record is not None:
        return journal.replayed(entry.record)
    started = clock.now()
    journal.step_position = entry.position
    where = {tracing.RUN_ID: str(journal.run.id), tracing.POSITION: entry.position}
    try:
        with tracing.span("agentflow.step", {**where, tracing.STEP: name}):
            result = fn(*args, **kwargs)
        output_json = dumps(result, what=f"output of step {name} at position {entry.position}")
    except Exception as exc:
        journal.record(
            entry,
            status=Step.Status.FAILED,
            error=error_record(exc),
            started_at=started,
            finished_at=clock.now(),
            event=entry.event(Event.Type.STEP_FAILED, error=str(exc)),
        )
        raise
    finally:
        journal.step_position = None
    _, output = journal.record(
        entry,
        status=Step.Status.SUCCEEDED,
        output_json=output_json,
        started_at=started,
        finished_at=clock.now(),
        event=entry.event(Event.Type.STEP_COMPLETED),
    )
    return output


def emit(journal: Journal, type_: str, data: Any) -> None:
    """Write a durable event of the agent's own, streamed live and kept."""
    if not isinstance(type_, str) or not type_ or type_.startswith(RESERVED_EVENT_PREFIXES):
        raise ValueError(
            f"event type {type_!r} must be a non-empty string not starting with "
            f"{', '.join(RESERVED_EVENT_PREFIXES)} (those are agentflow's own)"
        )
    check_text(type_, what="the event type of ctx.emit", max_chars=MAX_EVENT_TYPE_CHARS)
    data_json = dumps(data, what=f"data of event {type_}", sort_keys=True)
    entry = journal.take(Step.Kind.EMIT, type_, data_json)
    if entry.record is not None:
        return
    now = clock.now()
    journal.record(
        entry,
        status=Step.Status.SUCCEEDED,
        started_at=now,
        finished_at=now,
        event=(type_, {"position": entry.position, "data": data}),
    )


def recorded_value(journal: Journal, kind: str, make: Callable[[], Any]) -> Any:
    """``make()`` once, recorded at the next position; the recorded value on replay."""
    entry = journal.take(kind, kind, "null")
    if entry.record is not None:
        return journal.replayed(entry.record)
    now = clock.now()
    _, output = journal.record(
        entry,
        status=Step.Status.SUCCEEDED,
        output_json=dumps(make(), what=kind),
        started_at=now,
        finished_at=now,
    )
    return output


def patched(journal: Journal, change_id: str) -> bool:
    """True where the run reaches this point on new code; False on older history."""
    check_text(change_id, what="the change id of ctx.patched", max_chars=MAX_NAME_CHARS)
    record = journal.peek()
    if record is not None and not (
        record.kind == Step.Kind.PATCH and step_rows.same_name(record.name, change_id)
    ):
        return False
    if record is None and journal.replaying:
        return False  # replaying history that ended before this point
    entry = journal.take(Step.Kind.PATCH, change_id, "null")
    if entry.record is None:
        now = clock.now()
        journal.record(entry, status=Step.Status.SUCCEEDED, started_at=now, finished_at=now)
    return True
