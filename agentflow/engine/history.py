"""The histories this process parked last, so advancing such a run again loads only its tail.

A run that waits K times is advanced K times, and each advance replays its history; read
whole from the database every time, that is O(K^2) over the run. Finished steps never
change while a run is active, so a worker that parked a run keeps what it read, and when
the next lease on that run is its own again (the token moved by exactly one: nobody held
it in between), it reads only the positions after the finished prefix it kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agentflow.engine import store

# At most this many step records are kept per process, least recently parked dropped first.
MAX_RECORDS = 200_000


@dataclass
class _Kept:
    token: int
    prefix: int  # every position up to here is finished and kept
    records: dict[int, store.StepRecord]
    containers: list[int]  # positions whose output is a dict or a list


class HistoryCache:
    """Per-process histories of runs this process parked, keyed by run id."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records
        self._kept: OrderedDict[UUID, _Kept] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def load(self, run_id: UUID, token: int) -> dict[int, store.StepRecord]:
        """The run's history for the holder of ``token``: kept prefix plus a fresh tail."""
        with self._lock:
            kept = self._kept.pop(run_id, None)
            if kept is not None:
                self._size -= len(kept.records)
        if kept is None or kept.token + 1 != token:
            return store.load_history(run_id)
        history = dict(kept.records)
        for position in kept.containers:  # the only records the agent could change
            history[position] = fresh_copy(history[position])
        history.update(store.load_history(run_id, after=kept.prefix))
        return history

    def keep(self, run_id: UUID, token: int, history: dict[int, store.StepRecord]) -> None:
        """Remember what the holder of ``token`` read, up to the first unfinished position."""
        prefix, records = -1, {}
        while (record := history.get(prefix + 1)) is not None and record.finished:
            prefix += 1
            records[prefix] = record
        containers = [p for p, r in records.items() if isinstance(r.output, dict | list)]
        with self._lock:
            self._kept[run_id] = _Kept(token, prefix, records, containers)
            self._size += len(records)
            while self._size > self.max_records and self._kept:
                _, dropped = self._kept.popitem(last=False)
                self._size -= len(dropped.records)

    def forget(self, run_id: UUID) -> None:
        with self._lock:
            kept = self._kept.pop(run_id, None)
            if kept is not None:
                self._size -= len(kept.records)


def fresh_copy(record: store.StepRecord) -> store.StepRecord:
    """A record whose output (a dict or a list) the agent may change; the kept one stays."""
    output = record.output
    return store.StepRecord(
        record.id,
        record.position,
        record.kind,
        record.name,
        record.status,
        record.args_hash,
        _copy_json(output),
        record.error,
        record.attempts,
        record.wake_at,
        record.rate_slot,
    )


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


histories = HistoryCache()
