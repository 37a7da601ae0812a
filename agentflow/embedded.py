"""The embedded default: a Celery worker and beat inside this process, on the in-memory broker.

For the demo and for trying agentflow without services: the same tasks, the same
engine, the same reconciler as production, only the transport lives in memory.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from celery import current_app
from celery.beat import EmbeddedService
from celery.worker import WorkController


def is_embedded() -> bool:
    """True when the site's Celery broker is the in-memory transport."""
    return str(current_app.conf.broker_url or "").startswith("memory://")


def queues(app: object) -> list[str]:
    """agentflow's queue and every tool's own: the one embedded worker serves them all."""
    from agentflow import _registry as registry
    from agentflow import conf

    own = conf.setting("QUEUE") or app.conf.task_default_queue
    return sorted({own, *(tool.queue for tool in registry.tools() if tool.queue)})


@contextlib.contextmanager
def worker(concurrency: int = 2) -> Iterator[WorkController]:
    """Run a Celery worker (thread pool) and beat in background threads of this process."""
    app = current_app._get_current_object()
    app.loader.import_default_modules()
    controller = WorkController(
        app=app,
        pool_cls="threads",
        concurrency=concurrency,
        hostname="embedded@localhost",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
        queues=queues(app),
    )
    worker_thread = threading.Thread(target=controller.start, name="agentflow-worker", daemon=True)
    worker_thread.start()
    # django-celery-beat's scheduler: schedules made with agentflow.schedule fire here too.
    beat = EmbeddedService(
        app, thread=True, scheduler_cls="django_celery_beat.schedulers:DatabaseScheduler"
    )
    beat.start()
    try:
        yield controller
    finally:
        beat.stop()
        controller.stop(in_sighandler=False)
        worker_thread.join(10)
