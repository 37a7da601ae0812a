"""The event outbox: every Event row, numbered in the run's sequence, published once committed.

A writer takes the next number by bumping the run's ``event_seq`` (which locks the run
row until commit), so events commit in sequence order and a reader that resumes after
seq N misses nothing. Data is stored redacted; the live publish sends that stored JSON.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentflow._engine.ports import publisher
from agentflow._engine.serialize import dumps
from agentflow._engine.state import sql
from agentflow._engine.state.sql import EVENT, RUN, db_uuid, db_when
from agentflow._guardrails.redaction import redact_json
from agentflow.models import clock


def record_json(value: Any, what: str) -> str | None:
    """Redacted JSON of a record the runtime writes itself (an error, an event): never refused."""
    return None if value is None else redact_json(dumps(value, what=what, limited=False))


def announce(run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
    """Publish an event live once it commits (the redacted JSON that was stored)."""
    sql.on_commit(lambda: publisher().publish(run_id, seq, type_, data_json))


EVENT_COLUMNS = "(run_id, seq, type, data, created_at)"


def event_insert(source: str) -> str:
    """Insert one event per row of CTE ``source`` (which has ``id`` and ``event_seq``).

    Its parameters: the event type, its data and the time.
    """
    return f"INSERT INTO {EVENT} {EVENT_COLUMNS} SELECT id, event_seq, %s, %s, %s FROM {source}"


def next_seq(cursor: Any, run_id: UUID) -> int:
    cursor.execute(
        f"UPDATE {RUN} SET event_seq = event_seq + 1 WHERE id = %s RETURNING event_seq",
        [db_uuid(run_id)],
    )
    return cursor.fetchone()[0]


def insert_event(cursor: Any, run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
    """Insert an event whose seq the caller took (SQLite's path of a fenced write)."""
    cursor.execute(
        f"INSERT INTO {EVENT} {EVENT_COLUMNS} VALUES (%s, %s, %s, %s, %s)",
        [db_uuid(run_id), seq, type_, data_json, db_when(clock.now())],
    )
    announce(run_id, seq, type_, data_json)


def append_event(run_id: UUID, type_: str, data: dict[str, Any]) -> int:
    """Write an event for a writer that holds no lease (start, signal, cancel); return its seq.

    Taking the sequence number locks the run row until commit, so events commit in
    sequence order and a reader that resumes after seq N misses nothing. One statement on
    PostgreSQL, so it opens no savepoint inside the caller's transaction.
    """
    data_json = record_json(data, f"event {type_}")
    with sql.cursor() as cursor:
        if sql.postgres():
            cursor.execute(
                f"WITH seq AS (UPDATE {RUN} SET event_seq = event_seq + 1 WHERE id = %s "
                f"RETURNING id, event_seq) INSERT INTO {EVENT} {EVENT_COLUMNS} "
                "SELECT id, event_seq, %s, %s, %s FROM seq RETURNING seq",
                [db_uuid(run_id), type_, data_json, db_when(clock.now())],
            )
            seq = cursor.fetchone()[0]
            announce(run_id, seq, type_, data_json)
            return seq
        with sql.atomic():
            seq = next_seq(cursor, run_id)
            insert_event(cursor, run_id, seq, type_, data_json)
    return seq
