"""Which database holds agentflow's tables: asked of the site's routers, once."""

from __future__ import annotations

import functools
from typing import Any

from django.core.signals import setting_changed
from django.db import router
from django.dispatch import receiver


@functools.cache
def alias() -> str:
    """The alias of the database that holds agentflow's tables.

    Asked of the routers on first use (never at import), then kept: it is read several
    times per step. Changing ``DATABASE_ROUTERS`` or ``DATABASES`` (in tests) forgets it.
    """
    from agentflow.models import Step

    return router.db_for_write(Step) or "default"


@receiver(setting_changed)
def _forget_alias(*, setting: str, **kwargs: Any) -> None:
    if setting in ("DATABASE_ROUTERS", "DATABASES"):
        alias.cache_clear()
