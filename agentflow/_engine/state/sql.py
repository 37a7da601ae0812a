"""What the engine's raw SQL is built from: the database, quoting, values, literals, UNSET.

The connection is resolved on use through the site's database routers (the database
that holds agentflow's tables), never at import time. Status literals come from the model
enums, so SQL and models cannot drift apart.
"""

from __future__ import annotations

import contextlib
import enum
import functools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from agentflow import conf
from agentflow.models import Event, Run, Step
from agentflow.models.database import alias


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""A partial update's "leave this column as it is" (``None`` writes NULL)."""
Unset = _Unset


def connection() -> BaseDatabaseWrapper:
    """The connection to agentflow's database, for this thread."""
    return connections[alias()]


def cursor(*, prepared: bool = True) -> CursorWrapper:
    """A cursor on agentflow's database, for statements whose text never varies.

    On PostgreSQL with psycopg 3 their statements are prepared (see ``prepares``): the hot
    path's few statements are each parsed and planned once per connection instead of on
    every step. ``prepared=False`` for a statement built to a varying size. While queries
    are logged (``DEBUG``, a test capturing them), Django's own cursor serves, so the log
    shows each statement with its values.
    """
    db = connection()
    if not (prepared and prepares(db)) or db.queries_logged:
        return db.cursor()
    db.validate_thread_sharing()
    db.ensure_connection()
    raw = db.connection
    if raw.prepare_threshold is None:
        # Django turns automatic preparing off; only this module's cursors ask for it.
        raw.prepare_threshold = NEVER_AUTOMATICALLY
    with db.wrap_database_errors:
        statements = _preparing_cursor()(raw)
    _use_timezone(db, statements)
    return db.make_cursor(statements)


NEVER_AUTOMATICALLY = 2**31


def prepares(db: BaseDatabaseWrapper) -> bool:
    """Whether agentflow prepares its statements on ``db``.

    Only on psycopg 3, unless ``PREPARE_STATEMENTS`` is off, the database sets
    ``DISABLE_SERVER_SIDE_CURSORS`` (Django's switch for transaction-pooling PgBouncer),
    or its OPTIONS set ``prepare_threshold`` to None explicitly.
    """
    if db.vendor != "postgresql" or not conf.setting("PREPARE_STATEMENTS"):
        return False
    options = db.settings_dict.get("OPTIONS") or {}
    if db.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        return False
    if "prepare_threshold" in options and options["prepare_threshold"] is None:
        return False
    return _preparing_cursor() is not None


def _use_timezone(db: BaseDatabaseWrapper, statements: Any) -> None:
    """Read timestamps in the site's time zone, as Django's own cursors do."""
    from django.db.backends.postgresql import base
    from django.db.backends.postgresql.psycopg_any import register_tzloader
    from psycopg.pq import Format

    loader = db.connection.adapters.get_loader(base.TIMESTAMPTZ_OID, Format.TEXT)
    if db.timezone != loader.timezone:
        register_tzloader(db.timezone, statements)


@functools.cache
def _preparing_cursor() -> type | None:
    """Django's server-binding psycopg 3 cursor, with every statement prepared."""
    from django.db.backends.postgresql import base

    if not base.is_psycopg3:
        return None

    class PreparingCursor(base.ServerBindingCursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, prepare=True, **kwargs)

    return PreparingCursor


def atomic() -> transaction.Atomic:
    """A transaction (or savepoint, if one is open) on agentflow's database."""
    return transaction.atomic(using=alias())


def on_commit(fn: Callable[[], Any]) -> None:
    """Call ``fn`` once the current transaction on agentflow's database commits."""
    transaction.on_commit(fn, using=alias(), robust=True)


def postgres() -> bool:
    """Whether writes can be single statements (data-modifying CTEs)."""
    return connection().vendor == "postgresql"


def quote(name: str) -> str:
    return connection().ops.quote_name(name)


def db_uuid(value: UUID) -> Any:
    """A run id as this database stores it (SQLite keeps UUIDs as hex text)."""
    return Run._meta.pk.get_db_prep_value(value, connection())


def as_uuid(value: Any) -> UUID:
    """A run id read back from raw SQL as a UUID (SQLite returns hex text)."""
    return value if isinstance(value, UUID) else UUID(str(value))


def db_when(value: datetime | None) -> Any:
    """A datetime as this database takes it in raw SQL."""
    return connection().ops.adapt_datetimefield_value(value)


@functools.cache
def literal(*values: str) -> str:
    """``('a', 'b')`` for SQL ``IN``, from enum values (which are plain identifiers)."""
    for value in values:
        if not str(value).isidentifier():
            raise ValueError(f"{value!r} is not a plain identifier")
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


def table(model: type) -> str:
    return model._meta.db_table


RUN, STEP, EVENT = table(Run), table(Step), table(Event)
ACTIVE_RUN = literal(*Run.ACTIVE)
OPEN_STEP = literal(*Step.OPEN)  # the statuses of an open fan-out child
CLAIMABLE_STEP = literal(*Step.CLAIMABLE)


def fetch_dict(cursor: Any) -> dict[str, Any] | None:
    """The cursor's next row keyed by column name (None when there is none)."""
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip((column[0] for column in cursor.description), row, strict=True))


@contextlib.contextmanager
def exclusive(key: int) -> Iterator[bool]:
    """Yield True to one holder of ``key`` at a time across every process on this database.

    PostgreSQL: a session advisory lock, tried without waiting; it goes with the
    connection if the process dies. Elsewhere (SQLite) the block runs in one transaction,
    whose write lock serializes holders.
    """
    db = connection()
    if db.vendor != "postgresql":
        with atomic():
            yield True
        return
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with db.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
