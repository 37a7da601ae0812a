"""What the engine's raw SQL is built from: the database, quoting, values, literals, UNSET.

The connection is resolved on use through the site's database routers (the database
that holds agentflow's tables), never at import time. Status literals come from the model
enums, so SQL and models cannot drift apart.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.signals import setting_changed
from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.dispatch import receiver

from agentflow.models import Event, Run, Step


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""A partial update's "leave this column as it is" (``None`` writes NULL)."""
Unset = _Unset


@functools.cache
def alias() -> str:
    """The alias of the database that holds agentflow's tables.

    Asked of the routers on first use (never at import), then kept: it is read several
    times per step. Changing ``DATABASE_ROUTERS`` or ``DATABASES`` (in tests) forgets it.
    """
    return router.db_for_write(Step) or "default"


@receiver(setting_changed)
def _forget_alias(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASE_ROUTERS", "DATABASES"):
        alias.cache_clear()


def connection() -> BaseDatabaseWrapper:
    """The connection to agentflow's database, for this thread."""
    return connections[alias()]


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
OPEN_STEP = literal(
    Step.Status.PENDING, Step.Status.SCHEDULED, Step.Status.RUNNING, Step.Status.WAITING
)  # the statuses of an open fan-out child
CLAIMABLE_STEP = literal(Step.Status.PENDING, Step.Status.SCHEDULED)


def fetch_dict(cursor: Any) -> dict[str, Any] | None:
    """The cursor's next row keyed by column name (None when there is none)."""
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip((column[0] for column in cursor.description), row, strict=True))
