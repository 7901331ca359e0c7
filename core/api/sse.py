"""``GET /agents/events``: Server-Sent Events with replay from ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from core.engine_api import EngineAPI
from core.events import SubscriberLagged
from core.models import Event

KEEPALIVE_S = 15.0
SSE_KEEPALIVE: web.AppKey[float] = web.AppKey("sse_keepalive_s", float)


async def stream_events(request: web.Request, engine: EngineAPI) -> web.StreamResponse:
    last_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
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
    await response.write(b": connected\n\n")
    keepalive = request.app.get(SSE_KEEPALIVE, KEEPALIVE_S)
    events = engine.events(last_id)
    pending: asyncio.Task[Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=keepalive)
            if not done:
                await response.write(b": keep-alive\n\n")
                continue
            try:
                event = pending.result()
            except (StopAsyncIteration, SubscriberLagged):
                break
            finally:
                pending = None
            if wanted and event.type.value not in wanted:
                continue
            if agent_filter and event.agent_id != agent_filter:
                continue
            frame = f"id: {event.id}\nevent: {event.type.value}\ndata: {event.wire()}\n\n"
            await response.write(frame.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return response
