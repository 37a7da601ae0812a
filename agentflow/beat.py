"""The periodic tasks a site's Celery beat must run for agentflow."""

from __future__ import annotations

from typing import Any

from agentflow import conf


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Entries for ``app.conf.beat_schedule``: the reconciler every RECONCILE_EVERY seconds,
    and with ``RETENTION`` set, a daily prune of the runs older than that.

    Works with the default scheduler and with django-celery-beat's DatabaseScheduler,
    which copies ``beat_schedule`` into its tables at start.
    """
    options = {"queue": conf.setting("QUEUE")} if conf.setting("QUEUE") else {}
    schedule = {
        "agentflow.reconcile": {
            "task": "agentflow.reconcile",
            "schedule": float(conf.setting("RECONCILE_EVERY")),
            "options": {"expires": float(conf.setting("RECONCILE_EVERY")), **options},
        }
    }
    if conf.setting("RETENTION"):
        schedule["agentflow.prune"] = {
            "task": "agentflow.prune",
            "schedule": DAY,
            "options": {"expires": DAY, **options},
        }
    return schedule


DAY = 24 * 3600.0
