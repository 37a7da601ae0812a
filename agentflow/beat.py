"""The periodic tasks a site's Celery beat must run for agentflow."""

from __future__ import annotations

from typing import Any

from agentflow import conf


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Entries for ``app.conf.beat_schedule``: the reconciler every RECONCILE_EVERY seconds.

    Works with the default scheduler and with django-celery-beat's DatabaseScheduler,
    which copies ``beat_schedule`` into its tables at start.
    """
    options = {"queue": conf.setting("QUEUE")} if conf.setting("QUEUE") else {}
    return {
        "agentflow.reconcile": {
            "task": "agentflow.reconcile",
            "schedule": float(conf.setting("RECONCILE_EVERY")),
            "options": {"expires": float(conf.setting("RECONCILE_EVERY")), **options},
        }
    }
