"""``GET /agents/events``: Server-Sent Events with replay from ``Last-Event-ID``.

Every stream is its own writer: the event bus hands events to the stream's bounded buffer
without waiting (``core/events.py``), and the stream's handler writes them to its socket.
A client that stops reading fills its socket, then the transport's buffer, and the handler's
write blocks; after ``write_timeout_s`` of that the connection is aborted. Nobody else waits.

At most ``limit`` streams are open at once (``SSE_MAX_SUBSCRIBERS``); one more is refused with
503 before streaming starts. A stream frees its slot when it ends for any reason: the client
went away (noticed within ``LIVENESS_S``), its writes stalled, the server shut down, or the
event source failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from core.api.errors import error_response
from core.engine_api import EngineAPI
from core.events import SubscriberLagged, Subscription
from core.models import Event

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
WRITE_TIMEOUT_S = 5.0
MAX_SUBSCRIBERS = 100
LIVENESS_S = 1.0
"""How often a quiet stream checks that its client is still connected (and keep-alive)."""
RETRY_AFTER_S = 5
FRAME_CACHE = 4096
FALLBACK_BUFFER = 10_000
EVENT_ID = re.compile(r"^[0-9]{1,19}(-[0-9]{1,19})?$")


@dataclass
class EventStreams:
    """The open event streams of one API server: the limit, the timeouts, shutdown."""

    limit: int = MAX_SUBSCRIBERS
    keepalive_s: float = KEEPALIVE_S
    write_timeout_s: float = WRITE_TIMEOUT_S
    open: dict[Subscription, _Writer] = field(default_factory=dict)
    slots: int = 0
    """Streams holding a slot (a stream takes it before its subscription exists)."""
    stalled: int = 0
    """Streams closed because their client stopped reading."""
    _frames: dict[str, bytes] = field(default_factory=dict)
    _ticker: asyncio.Task[None] | None = None

    def frame(self, event: Event) -> bytes:
        """The event's SSE frame, encoded once however many streams send it."""
        frame = self._frames.get(event.id)
        if frame is None:
            text = f"id: {event.id}\nevent: {event.type.value}\ndata: {event.wire()}\n\n"
            frame = text.encode()
            if event.id:  # stream ids are unique; an event without one is not cached
                if len(self._frames) >= FRAME_CACHE:
                    del self._frames[next(iter(self._frames))]
                self._frames[event.id] = frame
        return frame

    def add(self, feed: Subscription, writer: _Writer) -> None:
        self.open[feed] = writer
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="sse-ticker")

    async def _tick(self) -> None:
        """One clock for every stream (no timer per stream and event): each quiet stream wakes
        up to check its client and its keep-alive."""
        period = min(LIVENESS_S, self.keepalive_s)
        while self.open:
            await asyncio.sleep(period)
            for feed in list(self.open):
                feed.nudge()

    async def on_shutdown(self, app: web.Application) -> None:
        """Ends every stream, so that the server's shutdown does not wait for them."""
        for feed, writer in list(self.open.items()):
            feed.close()
            if writer.blocked:  # its client is not reading: no final chunk for it
                writer.abort()
        if self._ticker is not None:
            self._ticker.cancel()


SSE_STREAMS: web.AppKey[EventStreams] = web.AppKey("sse_streams", EventStreams)


def _too_many(limit: int) -> web.Response:
    response = error_response(
        503,
        "too_many_streams",
        f"the server already serves {limit} event streams (SSE_MAX_SUBSCRIBERS); retry later",
        {"limit": limit},
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def stream_events(request: web.Request, engine: EngineAPI) -> web.StreamResponse:
    streams = request.app[SSE_STREAMS]
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if last_id and not EVENT_ID.match(last_id):
        return error_response(
            400, "invalid_request", "Last-Event-ID must be an event id like 1712345678901-0"
        )
    if streams.slots >= streams.limit:
        log.info("refused an event stream: %d streams open", streams.slots)
        return _too_many(streams.limit)
    streams.slots += 1
    try:
        return await _stream(request, engine, streams, last_id)
    finally:
        streams.slots -= 1


async def _stream(
    request: web.Request, engine: EngineAPI, streams: EventStreams, last_id: str | None
) -> web.StreamResponse:
    wanted = {t for t in request.query.get("types", "").split(",") if t}
    agent_filter = request.query.get("agentId")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    writer = _Writer(request, response, streams)
    feed, relay = _feed(engine.events(last_id))
    streams.add(feed, writer)
    loop = asyncio.get_running_loop()
    try:
        if not await writer.send(b": connected\n\n"):
            return response
        quiet_since = loop.time()
        while True:
            try:
                batch = await feed.next_batch()  # [] on the streams' clock tick
            except SubscriberLagged:  # a source that cannot catch up: the client resumes
                break
            if batch is None:
                break  # the bus stopped, or the server is shutting down
            chunk = b"".join(
                streams.frame(event)
                for event in batch
                if (not wanted or event.type.value in wanted)
                and (not agent_filter or event.agent_id == agent_filter)
            )
            if chunk:
                if not await writer.send(chunk):
                    return response
                quiet_since = loop.time()
            elif not writer.connected:
                return response  # the client went away while the stream was quiet
            elif loop.time() - quiet_since >= streams.keepalive_s:
                if not await writer.send(b": keep-alive\n\n"):
                    return response
                quiet_since = loop.time()
        await writer.finish()
    except Exception as exc:  # the event source failed (Valkey gone...): the client reconnects
        log.warning("event stream ended: %s", exc)
        writer.abort()
    finally:
        streams.open.pop(feed, None)
        feed.close()
        if relay is not None:
            relay.cancel()
            with contextlib.suppress(BaseException):
                await relay
    return response


class _Writer:
    """Writes to one client, giving up on it after ``write_timeout_s`` without progress."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, streams: EventStreams
    ) -> None:
        self._request = request
        self._response = response
        self._streams = streams
        self.blocked = False
        """A write is waiting for the client to read."""

    @property
    def connected(self) -> bool:
        transport = self._request.transport
        return transport is not None and not transport.is_closing()

    async def send(self, data: bytes) -> bool:
        try:
            transport = self._request.transport
            if transport is not None and self._cannot_block(transport, len(data)):
                await self._response.write(data)
                return True
            self.blocked = True
            async with asyncio.timeout(self._streams.write_timeout_s):
                await self._response.write(data)
        except TimeoutError:
            self._streams.stalled += 1
            log.warning(
                "closed the event stream to %s: its socket did not drain for %.1f s",
                self._request.remote,
                self._streams.write_timeout_s,
            )
            self.abort()
            return False
        except ConnectionError:
            return False
        finally:
            self.blocked = False
        return True

    @staticmethod
    def _cannot_block(transport: asyncio.BaseTransport, size: int) -> bool:
        """The write stays under the transport's high-water mark and the transport is not paused
        (its buffer is at most the low-water mark), so it returns without waiting: no timer."""
        if not isinstance(transport, asyncio.WriteTransport):
            return False
        low, high = transport.get_write_buffer_limits()
        buffered = transport.get_write_buffer_size()
        return buffered <= low and buffered + size + 64 <= high

    async def finish(self) -> None:
        """End the stream cleanly (the final chunk), within the same write timeout."""
        try:
            async with asyncio.timeout(self._streams.write_timeout_s):
                await self._response.write_eof()
        except TimeoutError:
            self.abort()
        except ConnectionError:
            pass

    def abort(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.abort()


def _feed(events: AsyncIterator[Event]) -> tuple[Subscription, asyncio.Task[None] | None]:
    """The engine's events as a subscription the handler can wait on with a timeout.

    The engine's own bus already gives one; any other event iterator is read by a relay task
    into a bounded buffer (which ends the stream if it overflows; the client resumes).
    """
    if isinstance(events, Subscription):
        return events, None
    feed = Subscription(None, None, buffer=FALLBACK_BUFFER)

    async def relay() -> None:
        try:
            async for event in events:
                feed.offer(event)
                if feed.closed:
                    break
        except Exception as exc:
            log.warning("event source failed: %s", exc)
        finally:
            feed.close()
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    return feed, asyncio.create_task(relay(), name="sse-relay")
