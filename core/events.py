"""The event bus: one reader of the Valkey event stream fans events out to in-process subscribers.

Subscribers (SSE clients, the dashboard, the spawner's kill listener) get events after a given
id (replayed from the bounded stream, so a reconnecting client misses nothing the stream still
holds) and then live ones, in stream order, without duplicates. A subscriber that falls too far
behind is dropped rather than slowing the others; it can reconnect from its last id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from core.models import Event
from core.store import STREAM, StateStore, event_from_entry

log = logging.getLogger(__name__)


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class SubscriberLagged(Exception):
    """The subscriber's buffer overflowed; reconnect from the last id seen."""


class EventBus:
    def __init__(self, store: StateStore, reader: aioredis.Redis, *, buffer: int = 10_000) -> None:
        self.store = store
        self._reader = reader
        self._buffer = buffer
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._last_id = await self.store.last_event_id()
        self._task = asyncio.create_task(self._pump(), name="event-bus")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def _pump(self) -> None:
        while True:
            try:
                batches = await self._reader.xread({STREAM: self._last_id}, block=1000, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection loss: retry without dying
                log.warning("event stream read failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    self._last_id = eid
                    raw = fields.get(b"e", fields.get("e"))
                    event = event_from_entry(eid, raw.decode() if isinstance(raw, bytes) else raw)
                    self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)  # tells the subscriber it lagged

    async def subscribe(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """Events after ``last_event_id`` (or from now on), then live ones."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(self._buffer)
        self._subscribers.add(queue)
        try:
            seen = (0, 0)
            if last_event_id:
                cursor = last_event_id
                while True:
                    replay = await self.store.events_after(cursor)
                    for event in replay:
                        seen = id_key(event.id)
                        yield event
                    if len(replay) < 1000:
                        break
                    cursor = replay[-1].id
            while True:
                item = await queue.get()
                if item is None:
                    if queue in self._subscribers or self._task is None:
                        return  # bus stopped
                    raise SubscriberLagged("event subscriber fell behind; reconnect from last id")
                if id_key(item.id) <= seen:
                    continue
                seen = id_key(item.id)
                yield item
        finally:
            self._subscribers.discard(queue)
