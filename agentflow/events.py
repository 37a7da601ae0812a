"""Live events: committed Event rows are rung on the Channels layer (a doorbell).

Events are the outbox: every state change is an Event row first. After its transaction
commits, the row is handed to a background thread that sends it to the channel layer
groups ``agentflow.run.<run id>`` and ``agentflow.runs``. The hot path only appends to an
in-memory queue. The thread keeps one event loop (so the layer keeps its connections) and
sends what piled up, over at least LINGER_SECONDS, as one message per run to the run's
group and one message for all of them to ``agentflow.runs``: a group send costs a few
Redis round trips whether or not anyone listens, so it is paid per batch, not per event.
A publish lost with a dying process is read from the table by the consumer, which
resumes from the client's last seq.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
import time
from typing import Any
from uuid import UUID

logger = logging.getLogger("agentflow.events")

ALL_RUNS_GROUP = "agentflow.runs"
MESSAGE_TYPE = "agentflow.events"
BATCH_MESSAGE_TYPE = "agentflow.batch"
DELTAS_MESSAGE_TYPE = "agentflow.deltas"
QUEUE_LIMIT = 10_000
# A batch closes at this many events or this many bytes of event data, whichever first.
BATCH_EVENTS = 200
BATCH_BYTES = 256 * 1024
# A batch stays open this long after its first event, so that the events of runs stepping
# fast share messages (it adds at most this much to the live latency).
LINGER_SECONDS = 0.005
# What the hot path queues: (run id, seq, type, data as stored JSON); seq None for an
# ephemeral event (a model's token deltas), which has no row and goes to the run's group only.
Queued = tuple[UUID, int | None, str, str | None]


def run_group(run_id: UUID | str) -> str:
    """The channel layer group that carries one run's events."""
    return f"agentflow.run.{UUID(str(run_id)).hex}"


def message(run_id: UUID | str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The channel layer message of one run's events, oldest first."""
    return {"type": MESSAGE_TYPE, "run": str(run_id), "events": events}


def batch_message(by_run: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ``agentflow.runs`` message of a batch: each run's events, oldest first."""
    return {
        "type": BATCH_MESSAGE_TYPE,
        "runs": [{"run": run_id, "events": events} for run_id, events in by_run.items()],
    }


class ChannelLayerPublisher:
    """Publishes from one daemon thread per process, in commit order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Queued] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def publish(self, run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait((run_id, seq, type_, data_json))
        except queue.Full:  # the layer is down or slow; readers catch up from the table
            logger.warning(
                "event queue full; dropped live event %s#%s",
                run_id,
                seq,
                extra={"agentflow_run_id": str(run_id), "agentflow_position": None},
            )

    def publish_ephemeral(self, run_id: UUID, type_: str, data: dict[str, Any]) -> None:
        """Stream an event that is not kept (token deltas): live watchers only, no seq."""
        self.publish(run_id, None, type_, json.dumps(data))  # type: ignore[arg-type]

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._queue = queue.Queue(QUEUE_LIMIT)  # a forked child starts empty
                self._thread = threading.Thread(
                    target=self._loop, name="agentflow-events", daemon=True
                )
                self._thread.start()

    def _loop(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()  # None without CHANNEL_LAYERS: events stay in the table
        loop = asyncio.new_event_loop()
        while True:
            batch = self._next_batch()
            try:
                if layer is not None:
                    loop.run_until_complete(_send(layer, batch))
            except Exception:  # the layer being down must never reach the engine
                logger.exception("publishing %d live events failed", len(batch))

    def _next_batch(self) -> list[Queued]:
        """Wait for one event, then take what else comes within the linger, up to a batch."""
        batch = [self._queue.get()]
        size = len(batch[0][3] or "")
        closes = time.monotonic() + LINGER_SECONDS
        while len(batch) < BATCH_EVENTS and size < BATCH_BYTES:
            try:
                batch.append(self._queue.get(timeout=max(0.0, closes - time.monotonic())))
            except queue.Empty:
                break
            size += len(batch[-1][3] or "")
        return batch


async def _send(layer: Any, batch: list[Queued]) -> None:
    by_run: dict[str, list[dict[str, Any]]] = {}
    deltas: dict[str, list[dict[str, Any]]] = {}
    for run_id, seq, type_, data_json in batch:
        data = json.loads(data_json) if data_json else {}
        kept = by_run if seq is not None else deltas
        kept.setdefault(str(run_id), []).append({"seq": seq, "event": type_, "data": data})
    for run_id, events in by_run.items():
        await layer.group_send(run_group(run_id), message(run_id, events))
    for run_id, events in deltas.items():
        await layer.group_send(
            run_group(run_id), {"type": DELTAS_MESSAGE_TYPE, "run": run_id, "events": events}
        )
    if by_run:
        await layer.group_send(ALL_RUNS_GROUP, batch_message(by_run))
