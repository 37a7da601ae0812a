"""Websocket consumers: one run's events, and the run list's status changes and approvals.

Both are thin adapters over the outbox (Event rows) and the publisher's channel-layer
messages (``agentflow.events``). Every socket checks its permission in ``connect`` and
closes before accepting when it is refused, so a refused client receives no frame.

A run socket joins the run's group *before* it reads the backlog from the table. An event
committed during the handshake is then in the backlog, or arrives live, or both; live events
at or below the last seq queued are dropped, and a live batch that skips a seq (a publish
lost with a dying process, or two processes publishing out of order) is read from the
table instead. Sequence numbers are taken under the run row's lock, so when seq N has
committed every seq below it has too.

Frames are paced by ``Pacer``: at most one per ``FRAME_INTERVAL`` (about 20 a second), and
whatever piled up in between goes out as one ``batch`` frame, so nothing is dropped.

A channel-layer failure (Redis restarted, a connection reset) does not close a socket: its
receive rejoins the group (``agentflow._layer_receive``), then a run socket reads what was
committed meanwhile from the table, after the last seq it queued.

The list socket's frames carry the ``seq`` of the Event row they come from: its primary key,
which is global. A page renders ``list_cursor()`` and connects with ``?after=`` it; the
socket then replays the list events after it from the table (the newest
``LIST_BACKLOG``). Primary keys are taken at INSERT and committed later, so an event
with a smaller key may commit after a larger one was seen: the replay also takes the
events written up to ``LATE_COMMIT_SECONDS`` before the cursor's own, and the client drops
the frames it already had (same seq, event and subject).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db.models import Q

from agentflow import _socket_access as socket_access
from agentflow import permissions
from agentflow._layer_receive import Message, RejoiningReceive
from agentflow.events import ALL_RUNS_GROUP, run_group
from agentflow.models import Approval, Event, Run

logger = logging.getLogger(__name__)

Frame = dict[str, Any]

# At most one frame per this many seconds per socket: about 20 frames a second.
FRAME_INTERVAL = 0.05
# A batch frame carries at most this many events; a longer backlog takes several frames.
FRAME_EVENTS = 500
# The close code of a socket whose user lost access (logged out, deactivated, permission
# removed): 4403, in the range the WebSocket protocol leaves to applications.
ACCESS_ENDED = 4403
# Runs a list socket remembers (oldest forgotten first).
RUN_CACHE_SIZE = 10_000
# List events a list socket replays on connect with ``after=`` (the newest ones).
LIST_BACKLOG = 1000
# How long a transaction may hold an event row between its INSERT (which takes the
# primary key) and its commit: events written this long before the cursor's are replayed.
LATE_COMMIT_SECONDS = 10.0
# ... and at most this many keys below the cursor (a bound on the rows read).
LATE_COMMIT_KEYS = 20_000
# Frames that are no event of their own: several frames in one, and (on the list socket)
# a run's new status.
BATCH_FRAME = "batch"
STATUS_FRAME = "run.status"


class Pacer:
    """Sends queued items at most once per ``FRAME_INTERVAL``, several as one frame.

    The first item after a quiet interval goes out at once; items that arrive faster wait
    for the next slot and share its frame (up to ``FRAME_EVENTS`` items).
    """

    def __init__(
        self, send: Callable[[Frame], Awaitable[None]], pack: Callable[[list[Frame]], Frame]
    ) -> None:
        self._send, self._pack = send, pack
        self._pending: list[Frame] = []
        self._next_at = 0.0  # event-loop time of the earliest next frame
        self._task: asyncio.Task[None] | None = None

    def put(self, items: list[Frame]) -> None:
        self._pending.extend(items)
        if items and self._task is None:
            self._task = asyncio.create_task(self._drain())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                delay = self._next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                items = self._pending[:FRAME_EVENTS]
                del self._pending[:FRAME_EVENTS]
                self._next_at = loop.time() + FRAME_INTERVAL
                await self._send(self._pack(items))
        finally:
            self._task = None


def run_frame(events: list[Frame]) -> Frame:
    """One event as itself; several as a batch whose ``seq`` is the last kept one included.

    Ephemeral events (token deltas) have no seq; a batch of only those has none either.
    """
    if len(events) == 1:
        return events[0]
    kept = [event["seq"] for event in events if event["seq"] is not None]
    return {"seq": kept[-1] if kept else None, "event": BATCH_FRAME, "data": {"events": events}}


def list_frame(frames: list[Frame]) -> Frame:
    """One list frame as itself; several as a batch whose ``seq`` is the last one's."""
    if len(frames) == 1:
        return frames[0]
    return {"seq": frames[-1]["seq"], "event": BATCH_FRAME, "data": {"events": frames}}


def list_cursor() -> int:
    """Where a list view's socket resumes: the newest event row's key (0 for none)."""
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def parse_after(query_string: bytes) -> int | None:
    """The ``after`` seq of a query string (0 when absent); None when malformed."""
    try:
        values = parse_qs(query_string.decode("ascii"), strict_parsing=False).get("after", ["0"])
        after = int(values[-1])
    except (UnicodeDecodeError, ValueError):
        return None
    return after if 0 <= after < 2**63 else None  # seq is a PostgreSQL bigint


def parse_run_id(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


@database_sync_to_async
def _may_view(user: Any, run_id: UUID) -> bool:
    run = Run.objects.filter(id=run_id).first()
    return run is not None and permissions.may_view(user, run)


@database_sync_to_async
def _may_list(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_active
        and user.has_perm(permissions.VIEW)
    )


@database_sync_to_async
def _events(run_id: UUID, after: int, upto: int | None = None) -> list[Frame]:
    """Events of a run with ``after < seq <= upto`` from the table, in seq order."""
    rows = Event.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        rows = rows.filter(seq__lte=upto)
    return [
        {"seq": seq, "event": type_, "data": data}
        for seq, type_, data in rows.order_by("seq").values_list("seq", "type", "data")
    ]


class StreamConsumer(AsyncJsonWebsocketConsumer):
    """A socket that only streams one channel-layer group, paced to ~20 frames a second."""

    group: str | None = None
    pacer: Pacer | None = None
    access_watch: asyncio.Task[None] | None = None

    @property
    def channel_receive(self) -> Callable[[], Awaitable[Message]]:
        """What channels' dispatch loop awaits: the layer's receive, rejoining when it fails."""
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[Message]]) -> None:
        # channels' __call__ sets the layer's own receive here; an error from it would end
        # the consumer (a 1011 close, and no disconnect to leave the group).
        self._channel_receive = RejoiningReceive(
            receive, self.channel_layer, self.channel_name, self._groups
        )

    def _groups(self) -> list[str]:
        return [self.group] if self.group is not None else []

    async def stream_group(self, group: str, frame: Any) -> None:
        """Subscribe to ``group`` before accepting, so nothing published meanwhile is missed."""
        self.pacer = Pacer(self.send_json, frame)
        self.group = group
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.access_watch = asyncio.create_task(self._watch_access())

    async def _watch_access(self) -> None:
        """Close the socket (code ``ACCESS_ENDED``) once its user may no longer see it."""
        while True:
            await asyncio.sleep(socket_access.RECHECK_SECONDS)
            user = await database_sync_to_async(socket_access.current_user)(self.scope)
            if not await self.still_allowed(user):
                await self.close(code=ACCESS_ENDED)
                return
            self.scope["user"] = user  # later checks see the fresh permissions

    async def still_allowed(self, user: Any) -> bool:
        """Whether ``user`` may still see what this socket streams."""
        raise NotImplementedError

    async def disconnect(self, code: int) -> None:
        if self.access_watch is not None:
            self.access_watch.cancel()
        if self.pacer is not None:
            self.pacer.stop()
        group, self.group = self.group, None  # a rejoin under way must not add it back
        receive = getattr(self, "_channel_receive", None)
        if isinstance(receive, RejoiningReceive):
            await receive.close()  # nor may one already adding it land after the discard
        if group is not None:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as exc:  # the layer is down; a restarted Redis forgot it anyway
                logger.warning("leaving %s failed for %s: %s", group, self.channel_name, exc)

    async def agentflow_rejoined(self, message: Message) -> None:
        """The layer failed and the group was joined again: catch up on what was missed."""
        if self.group is not None:
            await self.catch_up()

    async def catch_up(self) -> None:
        """Nothing by default: a list socket streams changes from now on."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The socket only streams; whatever a client sends is ignored, never decoded."""


class RunEventsConsumer(StreamConsumer):
    """``ws/agentflow/runs/<run id>/?after=<seq>``: the backlog after ``seq``, then live events."""

    async def connect(self) -> None:
        run_id = parse_run_id(self.scope["url_route"]["kwargs"]["run_id"])
        after = parse_after(self.scope.get("query_string", b""))
        if run_id is None or after is None or not await _may_view(self.scope.get("user"), run_id):
            await self.close()  # before accept: the handshake is refused, no frame is sent
            return
        self.run_id, self.last = run_id, after
        await self.stream_group(run_group(run_id), run_frame)
        self._queue(await _events(run_id, after))

    async def still_allowed(self, user: Any) -> bool:
        return await _may_view(user, self.run_id)

    async def catch_up(self) -> None:
        """Events committed while the layer was failing: read after the last seq queued."""
        self._queue(await _events(self.run_id, self.last))

    async def agentflow_events(self, message: dict[str, Any]) -> None:
        """A publisher's batch of this run's committed events."""
        events = sorted(
            (event for event in message["events"] if event["seq"] > self.last),
            key=lambda event: event["seq"],
        )
        if not events:
            return
        if [event["seq"] for event in events] != list(
            range(self.last + 1, self.last + 1 + len(events))
        ):
            events = await _events(self.run_id, self.last, events[-1]["seq"])
        self._queue(events)

    async def agentflow_deltas(self, message: dict[str, Any]) -> None:
        """Ephemeral frames (a model's token deltas): live only, ``seq`` null, never replayed."""
        self.pacer.put(message["events"])

    def _queue(self, events: list[Frame]) -> None:
        if events:
            self.last = events[-1]["seq"]
            self.pacer.put(events)


@dataclass
class ListedRun:
    """What a list socket remembers of a run: the view verdict, and its last status sent."""

    visible: bool
    agent: str
    status_seq: int = 0
    checked: int = 0  # the socket's access check the verdict belongs to


class RunListConsumer(StreamConsumer):
    """``ws/agentflow/runs/?after=<seq>``: run status changes and approvals, for list views.

    Needs ``agentflow.view_run`` granted globally; each run is then shown only if
    ``permissions.may_view`` allows it, asked once per run and socket. With ``after``, the
    list events after that event key are replayed first (see the module's docstring).
    """

    async def connect(self) -> None:
        query = self.scope.get("query_string", b"")
        after = parse_after(query)
        if after is None or not await _may_list(self.scope.get("user")):
            await self.close()
            return
        self.runs: dict[str, ListedRun] = {}
        self.checks = 0
        resume = "after" in parse_qs(query.decode("ascii"))
        # Without ``after``: live from now on, and a layer failure reads back from here.
        self.last = after if resume else await database_sync_to_async(list_cursor)()
        await self.stream_group(ALL_RUNS_GROUP, list_frame)
        if resume:
            await self.catch_up()

    async def still_allowed(self, user: Any) -> bool:
        self.checks += 1  # each run's verdict is asked again when it next shows
        return await _may_list(user)

    async def catch_up(self) -> None:
        """List events after the last key queued (and late commits before it), from the table."""
        for run_id, events in await _list_backlog(self.last):
            self._queue(await self._translate(run_id, events))

    async def agentflow_batch(self, message: dict[str, Any]) -> None:
        """A publisher's batch (several runs' events), translated for list views."""
        for run in message["runs"]:
            listed = [event for event in run["events"] if _listed(event)]
            if listed:
                self._queue(await self._translate(run["run"], listed, keyed=False))

    def _queue(self, frames: list[Frame]) -> None:
        if frames:
            self.last = max(self.last, *(frame["seq"] for frame in frames))
            self.pacer.put(frames)

    @database_sync_to_async
    def _translate(self, run_id: str, events: list[Frame], keyed: bool = True) -> list[Frame]:
        """List frames for one run's events; ``keyed`` when each event has its row's ``id``."""
        run = self._run(run_id)
        if run is None or not run.visible:
            return []
        if not keyed:
            events = _with_keys(run_id, events)
        frames: list[Frame] = []
        for event in sorted(events, key=lambda event: event["seq"]):
            type_, data, seq, key = event["event"], event["data"] or {}, event["seq"], event["id"]
            if type_.startswith("run."):
                # Two processes publish independently: never let an older status win.
                status = Event.STATUS_AFTER.get(type_) or _current_status(run_id)
                if status is not None and seq > run.status_seq:
                    run.status_seq = seq
                    frames.append(
                        {
                            "seq": key,
                            "event": STATUS_FRAME,
                            "data": {
                                "run": run_id,
                                "status": str(status),
                                "agent": run.agent,
                                "seq": seq,
                            },
                        }
                    )
            elif type_ == Event.Type.APPROVAL_DECIDED:
                frames.append(
                    {
                        "seq": key,
                        "event": Event.Type.APPROVAL_DECIDED,
                        "data": {
                            "run": run_id,
                            "approval": data.get("approval"),
                            "status": data.get("status"),
                        },
                    }
                )
            elif _asks_approval(event):
                frames.extend(_pending_approvals(run_id, data.get("position"), key))
        return frames

    def _run(self, run_id: str) -> ListedRun | None:
        listed = self.runs.get(run_id)
        if listed is None or listed.checked != self.checks:
            run = Run.objects.filter(id=run_id).first()
            if run is None:
                return None
            if listed is None:
                if len(self.runs) >= RUN_CACHE_SIZE:
                    del self.runs[next(iter(self.runs))]
                listed = self.runs[run_id] = ListedRun(False, run.agent)
            listed.visible = permissions.may_view(self.scope["user"], run)
            listed.checked = self.checks
        return listed


@database_sync_to_async
def _list_backlog(after: int) -> list[tuple[str, list[Frame]]]:
    """List events after key ``after`` and late commits before it, grouped by run.

    The newest ``LIST_BACKLOG`` of them, each with its row's ``id``, runs in key order.
    """
    anchor = Event.objects.filter(id=after).values_list("created_at", flat=True).first()
    rows = Event.objects.filter(_after_or_late(after, anchor)).filter(
        Q(type__startswith="run.")
        | Q(type__in=(Event.Type.APPROVAL_DECIDED, Event.Type.APPROVAL_REQUESTED))
        | Q(type=Event.Type.STEP_STARTED, data__has_key="children")
    )
    newest = rows.order_by("-id").values_list("id", "run_id", "seq", "type", "data")
    by_run: dict[str, list[Frame]] = {}
    for key, run_id, seq, type_, data in reversed(newest[:LIST_BACKLOG]):
        event = {"id": key, "seq": seq, "event": type_, "data": data}
        by_run.setdefault(str(run_id), []).append(event)
    return list(by_run.items())


def _after_or_late(after: int, anchor: Any) -> Q:
    """Events keyed after ``after``, or at most ``LATE_COMMIT_KEYS`` below it and written
    at most ``LATE_COMMIT_SECONDS`` before it (they may have committed after it was seen).

    One range of the primary key, so the read stays bounded on a large table.
    """
    if anchor is None:
        return Q(id__gt=after)
    late = Q(created_at__gte=anchor - timedelta(seconds=LATE_COMMIT_SECONDS))
    return Q(id__gt=max(0, after - LATE_COMMIT_KEYS)) & (Q(id__gt=after) | late)


def _with_keys(run_id: str, events: list[Frame]) -> list[Frame]:
    """Live events (run and seq only) with their rows' ``id``; one query."""
    keys = dict(
        Event.objects.filter(run_id=run_id, seq__in=[event["seq"] for event in events])
        .values_list("seq", "id")
        .iterator()
    )
    return [{**event, "id": keys[event["seq"]]} for event in events if event["seq"] in keys]


def _listed(event: Frame) -> bool:
    """Whether a run event matters to list views: a status change or an approval."""
    type_ = event["event"]
    return type_.startswith("run.") or type_ == Event.Type.APPROVAL_DECIDED or _asks_approval(event)


def _asks_approval(event: Frame) -> bool:
    """Whether an event may come with new approvals.

    A fan-out's children ask for theirs with the parent's ``step.started``.
    """
    type_ = event["event"]
    return type_ == Event.Type.APPROVAL_REQUESTED or (
        type_ == Event.Type.STEP_STARTED and "children" in (event["data"] or {})
    )


def _current_status(run_id: str) -> str | None:
    return Run.objects.filter(id=run_id).values_list("status", flat=True).first()


def _pending_approvals(run_id: str, position: int | None, key: int) -> list[Frame]:
    if position is None:
        return []
    rows = Approval.objects.filter(
        run_id=run_id, position=position, status=Approval.Status.PENDING
    ).order_by("index", "id")
    return [
        {
            "seq": key,
            "event": Event.Type.APPROVAL_REQUESTED,
            "data": {"run": run_id, "approval": approval_id, "title": title, "index": index},
        }
        for approval_id, title, index in rows.values_list("id", "title", "index")
    ]
