"""Celery adapters: thin tasks that hand run ids to the engine, and the dispatcher.

Every task is safe to receive twice. ``acks_late`` with ``reject_on_worker_lost`` puts a
message back when its worker dies; the lease and the reconciler do the rest.

Three rules keep a worker useful under faults:
- every task starts on a usable database connection, and one that fails on a dead
  connection is retried, not dropped (``DurableTask``);
- control messages (advance, join, reconcile, sending a fan-out) go ahead of tool work
  in the broker's queue (``priorities``), so a killed run resumes while slow tools wait;
- every worker process runs the reconciler from its heartbeat thread, so recovery needs
  no beat (``reconcile_in_this_worker``).
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from functools import cache
from typing import Any
from uuid import UUID

from celery import Task, chord, current_app, shared_task
from celery.signals import before_task_publish, worker_process_init, worker_ready
from django.db import InterfaceError, OperationalError, connections

from agentflow import _retention as retention
from agentflow import _tracing as tracing
from agentflow import conf, schedules
from agentflow._engine import child_runner, executor, fan_out_record, leases, reconciler
from agentflow._engine.state import sql
from agentflow._guardrails import fleet


class DurableTask(Task):
    """An agentflow task: late ack, requeued if its worker dies, retried on a dead database.

    A connection that failed in an earlier task (a database restart, say) is closed before
    the next task starts, as Django does between requests; Celery's own check is skipped
    while ``CELERY_DB_REUSE_MAX`` keeps connections. A task that hits a dead connection
    anyway is sent again with backoff; the engine makes the repeat harmless.
    """

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = 0.5
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 20

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        for conn in connections.all(initialized_only=True):
            conn.close_if_unusable_or_obsolete()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Continue the trace of whoever sent the message (see ``agentflow._tracing``).
        with tracing.continued(self.request):
            return super().__call__(*args, **kwargs)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@shared_task(name="agentflow.advance", base=DurableTask)
def advance(run_id: str) -> str:
    """Advance one run as far as it can go now."""
    return executor.advance(UUID(run_id), worker=worker_name())


@shared_task(name="agentflow.run_tool", base=DurableTask)
def run_tool(step_id: int) -> str:
    """Run one fan-out child (a chord header task; the chord counts it all the same)."""
    return child_runner.run_child(step_id)


@shared_task(name="agentflow.run_tools", base=DurableTask)
def run_tools(step_ids: list[int], queue: str | None = None) -> list[str]:
    """Run several children of a fan-out in turn, each claimed and recorded on its own.

    For about FAN_OUT_TASK_SECONDS: the rest then goes back to ``queue`` as a task of its
    own, so a control message queued meanwhile gets this process after one child, as it
    would between one-child tasks.
    """
    outcomes, rest = child_runner.run_in_turn(step_ids, conf.setting("FAN_OUT_TASK_SECONDS"))
    if rest:
        run_tools.apply_async((rest, queue), **_options(WORK, queue))
    return outcomes


@shared_task(name="agentflow.fan_out_chunk", base=DurableTask)
def fan_out_chunk(
    run_id: str, position: int, groups: list[list[int]], queue: str | None = None
) -> None:
    """Send one chord of a fan-out: a header task per group of children, the join as body.

    The children go to ``queue`` (their tool's own, if it has one); the join goes to
    agentflow's queue.
    """
    send_chord(run_id, position, groups, queue)


def send_chord(run_id: str, position: int, groups: list[list[int]], queue: str | None) -> None:
    """A chord of the children in ``groups`` (a header task each) with the join as body."""
    work, control = _options(WORK, queue), _options(CONTROL)
    header = [
        (run_tool.si(group[0]) if len(group) == 1 else run_tools.si(group, queue)).set(**work)
        for group in groups
    ]
    chord(header)(join.s(run_id, position).set(**control))


@shared_task(name="agentflow.join", base=DurableTask, ignore_result=False)
def join(results: object, run_id: str, position: int) -> bool:
    """Chord body: close the fan-out if its children are done. Safe to fire twice or never."""
    return fan_out_record.join(UUID(run_id), position)


@shared_task(name="agentflow.reconcile", base=DurableTask)
def reconcile() -> dict[str, int] | None:
    """Wake runs left behind by dead workers, lost messages or due timers.

    Skipped (None) while another process's pass runs: one pass at a time across the fleet.
    """
    return reconciler.reconcile_exclusively()


@shared_task(name="agentflow.prune", base=DurableTask)
def prune() -> str | None:
    """Delete the finished runs older than ``AGENTFLOW["RETENTION"]`` (None: keeps all)."""
    age = conf.setting("RETENTION")
    if not age:
        return None
    return str(retention.prune(retention.parse_age(age)))


CONTROL, WORK = "control", "work"


@cache
def priorities(broker_url: str) -> dict[str, int]:
    """Message priorities that put control ahead of tool work on this broker.

    Redis (and kombu's other virtual transports) serve priority 0 first and tasks without
    a priority count as 0; AMQP brokers serve the highest first (RabbitMQ only on queues
    declared with ``x-max-priority``: set ``CELERY_TASK_QUEUE_MAX_PRIORITY``).
    """
    scheme = broker_url.partition("://")[0].lower()
    if scheme in ("amqp", "amqps", "pyamqp", "librabbitmq"):
        return {CONTROL: 9, WORK: 0}
    return {CONTROL: 0, WORK: 9}


def _options(lane: str, queue: str | None = None) -> dict[str, Any]:
    """Queue, priority and trace context for a control or a work message.

    ``queue`` is a tool's own. The trace context is the one current now, when the engine
    decides to send, not when the send runs after commit.
    """
    broker_url = str(current_app.conf.broker_url or "")
    options: dict[str, Any] = {"priority": priorities(broker_url)[lane]}
    queue = queue or conf.setting("QUEUE")
    if queue:
        options["queue"] = queue
    headers = tracing.carrier()
    if headers:
        options["headers"] = headers
    return options


def header_tasks(children: int) -> int:
    """How many chord header tasks a fan-out of ``children`` gets.

    One per child, up to FAN_OUT_TASKS and up to twice the tasks the live fleet runs at
    once (its census, when Redis keeps one): a Celery task costs its worker a few
    milliseconds whatever it runs, and more tasks than the fleet can run add that cost,
    not parallelism. Twice, so a process that finishes its task early finds another.
    """
    cap = conf.setting("FAN_OUT_TASKS")
    live = fleet.slots()
    if live:
        cap = min(cap, 2 * live)
    return max(1, min(children, cap))


class CeleryDispatcher:
    """Send agentflow's messages once the current transaction on agentflow's database commits.

    Sends are ``robust``: a broker error is logged, never raised into the run, because the
    rows are already committed and the reconciler sends what was lost.
    """

    def advance(self, run_id: UUID, *, eta: datetime | None = None) -> None:
        options = _options(CONTROL)
        sql.on_commit(lambda: advance.apply_async((str(run_id),), eta=eta, **options))

    def run_child(
        self,
        step_id: int,
        *,
        eta: datetime | None = None,
        urgent: bool = False,
        queue: str | None = None,
    ) -> None:
        options = _options(CONTROL if urgent else WORK, queue)
        sql.on_commit(lambda: run_tool.apply_async((step_id,), eta=eta, **options))

    def fan_out(
        self, run_id: UUID, position: int, step_ids: list[int], *, queue: str | None = None
    ) -> None:
        """Chords of at most CHORD_SIZE header tasks; several are sent by small tasks of their own.

        One chord (a small fan-out) is sent right after commit, saving a message round trip.

        A fan-out gets ``header_tasks`` header tasks: up to that many children, one task
        each; beyond it, children share tasks (each still claimed on its own), so broker
        traffic stays bounded while parallelism stays above the fleet's. No message grows
        with the fan-out, and several workers send the chords at once.
        """
        options = _options(CONTROL)
        per_task = -(-len(step_ids) // header_tasks(len(step_ids)))
        groups = [step_ids[i : i + per_task] for i in range(0, len(step_ids), per_task)]
        size = conf.setting("CHORD_SIZE")
        chunks = [groups[i : i + size] for i in range(0, len(groups), size)]

        def send() -> None:
            if len(chunks) == 1:  # one chord: send it now, not through another task
                send_chord(str(run_id), position, chunks[0], queue)
                return
            for chunk in chunks:
                fan_out_chunk.apply_async((str(run_id), position, chunk, queue), **options)

        sql.on_commit(send)


@worker_ready.connect
def reconcile_at_worker_start(sender: object = None, **kwargs: object) -> None:
    """A worker that starts after a crash picks up what its predecessor left.

    Pools without child processes (threads, solo) run the periodic pass here too.
    """
    reconcile.apply_async(**_options(CONTROL))
    controller = getattr(sender, "controller", None)
    pool = getattr(controller, "pool_cls", None)
    pool_module = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" not in str(pool_module):
        reconcile_in_this_worker(slots=int(getattr(controller, "concurrency", None) or 1))


@worker_process_init.connect
def reconcile_in_this_worker(slots: int = 1, **kwargs: object) -> None:
    """Offer a reconciler pass from this process's heartbeat thread every RECONCILE_EVERY
    (the fleet takes one per period), and count the process (a prefork child runs one
    task at a time) in the fleet's census."""
    leases.heartbeat.reconciling(reconciler.reconcile_in_turn)
    leases.heartbeat.announcing(worker_name(), slots)


@shared_task(name=schedules.TASK, base=DurableTask, bind=True)
def start_scheduled(self: Task, schedule: int, **kwargs: Any) -> str | None:
    """One beat tick of ``agentflow.schedule``: start its one run (a repeat returns it)."""
    stamped = self.request.get(schedules.FIRE_TIME_HEADER)
    run = schedules.start_tick(schedule, stamped=stamped, **kwargs)
    return None if run is None else str(run.id)


@before_task_publish.connect
def stamp_fire_time(sender: str | None = None, headers: dict | None = None, **kwargs: Any) -> None:
    """Stamp a scheduled start with the time it is published: its tick, in every delivery."""
    if sender == schedules.TASK and headers is not None:
        headers.setdefault(schedules.FIRE_TIME_HEADER, datetime.now(UTC).isoformat())
