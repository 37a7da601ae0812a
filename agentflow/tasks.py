"""Celery adapters: thin tasks that hand run ids to the engine, and the dispatcher.

Every task is safe to receive twice. ``acks_late`` with ``reject_on_worker_lost`` puts a
message back when its worker dies; the lease and the reconciler do the rest.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from uuid import UUID

from celery import chord, shared_task
from celery.signals import worker_ready
from django.db import transaction

from agentflow import conf
from agentflow.engine import children, executor, fanout, reconciler

DURABLE = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@shared_task(name="agentflow.advance", **DURABLE)
def advance(run_id: str) -> str:
    """Advance one run as far as it can go now."""
    return executor.advance(UUID(run_id), worker=worker_name())


@shared_task(name="agentflow.run_tool", **DURABLE)
def run_tool(step_id: int) -> str:
    """Run one fan-out child (a chord header task; the chord counts it all the same)."""
    return children.run_child(step_id)


@shared_task(name="agentflow.run_tools", **DURABLE)
def run_tools(step_ids: list[int]) -> list[str]:
    """Run several children of a large fan-out, each claimed and recorded on its own."""
    return [children.run_child(step_id) for step_id in step_ids]


@shared_task(name="agentflow.fan_out_chunk", **DURABLE)
def fan_out_chunk(run_id: str, position: int, groups: list[list[int]]) -> None:
    """Send one chord of a fan-out: a header task per group of children, the join as body."""
    options = _queue_options()
    header = [
        (run_tool.si(group[0]) if len(group) == 1 else run_tools.si(group)).set(**options)
        for group in groups
    ]
    chord(header)(join.s(run_id, position).set(**options))


@shared_task(name="agentflow.join", acks_late=True, reject_on_worker_lost=True)
def join(results: object, run_id: str, position: int) -> bool:
    """Chord body: close the fan-out if its children are done. Safe to fire twice or never."""
    return fanout.join(UUID(run_id), position)


@shared_task(name="agentflow.reconcile", **DURABLE)
def reconcile() -> dict[str, int]:
    """Wake runs left behind by dead workers, lost messages or due timers."""
    return reconciler.reconcile()


def _queue_options() -> dict[str, str]:
    queue = conf.setting("QUEUE")
    return {"queue": queue} if queue else {}


class CeleryDispatcher:
    """Send agentflow's messages once the current transaction commits.

    Sends are ``robust``: a broker error is logged, never raised into the run, because the
    rows are already committed and the reconciler sends what was lost.
    """

    def advance(self, run_id: UUID, *, eta: datetime | None = None) -> None:
        options = _queue_options()
        transaction.on_commit(
            lambda: advance.apply_async((str(run_id),), eta=eta, **options), robust=True
        )

    def run_child(self, step_id: int, *, eta: datetime | None = None) -> None:
        options = _queue_options()
        transaction.on_commit(
            lambda: run_tool.apply_async((step_id,), eta=eta, **options), robust=True
        )

    def fan_out(self, run_id: UUID, position: int, step_ids: list[int]) -> None:
        """Chords of at most CHORD_SIZE header tasks, each chord sent by its own small task.

        A fan-out gets at most FAN_OUT_TASKS header tasks: up to that many children, one
        task each; beyond it, children share tasks (each still claimed on its own), so
        broker traffic stays bounded while parallelism stays above any pool's size. No
        message grows with the fan-out, and several workers send the chords at once.
        """
        options = _queue_options()
        per_task = -(-len(step_ids) // conf.setting("FAN_OUT_TASKS"))
        groups = [step_ids[i : i + per_task] for i in range(0, len(step_ids), per_task)]
        size = conf.setting("CHORD_SIZE")
        chunks = [groups[i : i + size] for i in range(0, len(groups), size)]

        def send() -> None:
            for chunk in chunks:
                fan_out_chunk.apply_async((str(run_id), position, chunk), **options)

        transaction.on_commit(send, robust=True)


@worker_ready.connect
def reconcile_at_worker_start(sender: object = None, **kwargs: object) -> None:
    """A worker that starts after a crash picks up what its predecessor left."""
    reconcile.apply_async(**_queue_options())
