"""Live events: committed Event rows are rung on the Channels layer (a doorbell).

Events are the outbox: every state change is an Event row first. After its transaction
commits, the row is handed to a background thread that sends it to the channel layer
groups ``agentflow.run.<run id>`` and ``agentflow.runs``. The hot path only appends to an
in-memory queue; a publish lost with a dying process is read from the table by the
consumer, which resumes from the client's last seq.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from typing import Any
from uuid import UUID

logger = logging.getLogger("agentflow.events")

ALL_RUNS_GROUP = "agentflow.runs"
MESSAGE_TYPE = "agentflow.event"
QUEUE_LIMIT = 10_000


def run_group(run_id: UUID | str) -> str:
    """The channel layer group that carries one run's events."""
    return f"agentflow.run.{UUID(str(run_id)).hex}"


def message(run_id: UUID, seq: int, type_: str, data_json: str | None) -> dict[str, Any]:
    """The channel layer message of one event."""
    return {
        "type": MESSAGE_TYPE,
        "run": str(run_id),
        "seq": seq,
        "event": type_,
        "data": json.loads(data_json) if data_json else {},
    }


class ChannelLayerPublisher:
    """Publishes from one daemon thread per process, in commit order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def publish(self, run_id: UUID, seq: int, type_: str, data_json: str | None) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(message(run_id, seq, type_, data_json))
        except queue.Full:  # the layer is down or slow; readers catch up from the table
            logger.warning("event queue full; dropped live event %s#%s", run_id, seq)

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
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        layer = get_channel_layer()  # None without CHANNEL_LAYERS: events stay in the table
        while True:
            event = self._queue.get()
            try:
                if layer is not None:
                    async_to_sync(self._send)(layer, event)
            except Exception:  # the layer being down must never reach the engine
                logger.exception("publishing event %s#%s failed", event["run"], event["seq"])
            finally:
                self._queue.task_done()

    @staticmethod
    async def _send(layer: Any, event: dict[str, Any]) -> None:
        await layer.group_send(run_group(event["run"]), event)
        await layer.group_send(ALL_RUNS_GROUP, event)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued events are handed to the layer (for shutdown and tests)."""
        import time

        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks
