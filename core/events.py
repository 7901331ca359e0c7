"""The event bus: one reader of the Valkey event stream fans events out to in-process subscribers.

Subscribers (SSE clients, the dashboard, the spawner's kill listener) get events after a given
id (replayed from the bounded stream, so a reconnecting client misses nothing the stream still
holds) and then live ones, in stream order, without duplicates.

The fan-out never waits for a subscriber: the reader hands each event to every subscriber's
bounded buffer without awaiting anything. A subscriber whose buffer is full stops receiving live
events, catches up by reading the stream itself from its last id (at its own pace, holding at
most one page), and rejoins the live fan-out when it has caught up; nobody else notices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from core.models import Event
from core.store import STREAM, StateStore, event_from_entry

log = logging.getLogger(__name__)

REPLAY_PAGE = 1000


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class SubscriberLagged(Exception):
    """A subscription without a stream to catch up from overflowed; reconnect from its last id."""


class Subscription(AsyncIterator[Event]):
    """One subscriber's events: an async iterator, or batches through :meth:`next_batch`.

    Waiting for events can be cancelled or time out without losing one or ending the
    subscription. Without a bus (``bus=None``) it is a plain bounded buffer fed by
    :meth:`offer`: it cannot catch up, so an overflow ends it with ``SubscriberLagged``.
    """

    def __init__(self, bus: EventBus | None, after: str | None, *, buffer: int) -> None:
        self._bus = bus
        self._limit = buffer
        self._buffer: deque[Event] = deque()
        self._ready: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._lagged = False
        self._expired = False
        # the last id handed out (or the starting point): catching up reads the stream after it
        self._last = after if after else (bus.last_id if bus else "0-0")
        self._seen = id_key(self._last)
        self._replaying = bool(after) and bus is not None
        self._live = True
        self.overflows = 0
        if bus is not None:
            bus._subscribers.add(self)
            if bus.stopped:
                self.close()

    @property
    def last_id(self) -> str:
        """The id to resume after: the last event handed out, or the starting point."""
        return self._last

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, event: Event) -> None:
        """Take a live event; never blocks (the bus calls it for every subscriber in turn)."""
        if self._closed or not self._live:
            return
        if len(self._buffer) >= self._limit:
            self.overflows += 1
            self._buffer.clear()
            if self._bus is None:
                self._lagged = True
            else:  # read the stream from the last id handed out instead
                self._live = False
                self._replaying = True
                self._bus._subscribers.discard(self)
        else:
            self._buffer.append(event)
        self._wake()

    def close(self) -> None:
        """End the subscription (from any task): the consumer gets what is buffered, then the
        end; a waiting one wakes at once."""
        self._closed = True
        if self._bus is not None:
            self._bus._subscribers.discard(self)
        self._wake()

    async def aclose(self) -> None:
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fresh(self, events: list[Event] | deque[Event]) -> list[Event]:
        """Events newer than the last one handed out (replayed and live ones overlap)."""
        fresh: list[Event] = []
        seen = self._seen
        for event in events:
            key = id_key(event.id)
            if key > seen:
                seen = key
                fresh.append(event)
        if fresh:
            self._seen = seen
            self._last = fresh[-1].id
        return fresh

    async def _replay_page(self) -> list[Event]:
        assert self._bus is not None
        page = await self._bus.store.events_after(self._last, REPLAY_PAGE)
        if len(page) < REPLAY_PAGE:
            if self._live:
                self._replaying = False  # live events since going live follow in the buffer
            elif self._bus.stopped:
                self.close()
            elif not self._closed:
                # caught up: go live, then read once more so that nothing between falls through
                self._live = True
                self._bus._subscribers.add(self)
        return self._fresh(page)

    async def next_batch(self, timeout: float | None = None) -> list[Event] | None:
        """The next events in order (at least one); ``[]`` after ``timeout`` seconds without
        any; ``None`` once the subscription is closed (or the bus stopped) and drained."""
        if self._ready:
            batch = list(self._ready)
            self._ready.clear()
            return batch
        timer: asyncio.TimerHandle | None = None
        try:
            while True:
                if self._lagged:
                    raise SubscriberLagged("event subscriber fell behind; reconnect from last id")
                if self._replaying and not self._closed:
                    fresh = await self._replay_page()
                elif self._buffer:
                    fresh = self._fresh(self._buffer)
                    self._buffer.clear()
                elif self._closed:
                    return None
                else:
                    if self._expired:
                        self._expired = False
                        return []
                    loop = asyncio.get_running_loop()
                    if timeout is not None and timer is None:
                        timer = loop.call_later(timeout, self.nudge)
                    self._waiter = loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                    continue
                if fresh:
                    return fresh
        finally:
            if timer is not None:
                timer.cancel()

    def nudge(self) -> None:
        """Wake the consumer: it gets an empty batch if no event is there (a clock tick)."""
        self._expired = True
        self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if not self._ready:
            batch = await self.next_batch()
            if batch is None:
                raise StopAsyncIteration
            self._ready.extend(batch)
        return self._ready.popleft()


class EventBus:
    def __init__(self, store: StateStore, reader: aioredis.Redis, *, buffer: int = 10_000) -> None:
        self.store = store
        self._reader = reader
        self._buffer = buffer
        self._subscribers: set[Subscription] = set()
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    async def start(self) -> None:
        self._last_id = await self.store.last_event_id()
        self._task = asyncio.create_task(self._pump(), name="event-bus")

    async def stop(self) -> None:
        self.stopped = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for subscription in list(self._subscribers):
            subscription.close()

    @property
    def last_id(self) -> str:
        """The last stream id fanned out: a new live subscriber gets every event after it."""
        return self._last_id

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def _pump(self) -> None:
        failing = False
        while True:
            try:
                batches = await self._reader.xread({STREAM: self._last_id}, block=1000, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection loss (a Valkey outage): retry without dying
                if not failing:  # once per outage, not twice a second
                    log.warning("event stream read failed (retrying until it works): %s", exc)
                failing = True
                await asyncio.sleep(0.5)
                continue
            if failing:
                log.info("event stream readable again; events resume after %s", self._last_id)
                failing = False
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    self._last_id = eid
                    raw = fields.get(b"e", fields.get("e"))
                    event = event_from_entry(eid, raw.decode() if isinstance(raw, bytes) else raw)
                    self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; synchronous, so no subscriber can hold it up."""
        for subscription in tuple(self._subscribers):
            subscription.offer(event)

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """Events after ``last_event_id`` (or from now on), then live ones."""
        return Subscription(self, last_event_id, buffer=self._buffer)
