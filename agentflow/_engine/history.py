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
from uuid import UUID

from agentflow._engine.state import step_rows

# At most this many step records are kept per process, least recently parked dropped first.
MAX_RECORDS = 200_000


class History(dict):
    """A run's records by position, and how far they are known finished (``prefix``).

    Positions are contiguous from 0, so the records after ``prefix`` are the tail that
    may still change. Agents never get a record's own output (``Journal.replayed`` hands
    out copies of containers), so kept records stay as they were read.
    """

    prefix: int = -1


@dataclass
class _Kept:
    token: int
    history: History  # its positions up to history.prefix only


class HistoryCache:
    """Per-process histories of runs this process parked, keyed by run id."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records
        self._kept: OrderedDict[UUID, _Kept] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def load(self, run_id: UUID, token: int) -> History:
        """The run's history for the holder of ``token``: kept prefix plus a fresh tail."""
        with self._lock:
            kept = self._kept.pop(run_id, None)
            if kept is not None:
                self._size -= len(kept.history)
        if kept is None or kept.token + 1 != token:
            return History(step_rows.load_history(run_id))
        history = kept.history  # taken out of the cache: this advance owns it now
        history.update(step_rows.load_history(run_id, after=history.prefix))
        return history

    def keep(self, run_id: UUID, token: int, history: dict[int, step_rows.StepRecord]) -> None:
        """Remember what the holder of ``token`` read, up to the first unfinished position.

        Costs what the history grew by since it was loaded, not its length.
        """
        kept = history if isinstance(history, History) else History(history)
        prefix = kept.prefix
        while (record := kept.get(prefix + 1)) is not None and record.finished:
            prefix += 1
        for position in range(prefix + 1, prefix + 1 + len(kept)):  # the tail may change
            kept.pop(position, None)
        kept.prefix = prefix
        with self._lock:
            self._kept[run_id] = _Kept(token, kept)
            self._size += len(kept)
            while self._size > self.max_records and self._kept:
                _, dropped = self._kept.popitem(last=False)
                self._size -= len(dropped.history)


histories = HistoryCache()
