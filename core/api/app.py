"""The REST/SSE server (SPEC §3): thin handlers over ``EngineAPI``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from core.api.auth import auth_middleware, principal
from core.api.errors import error_middleware, read_json
from core.api.guard import HostPolicy, guard_middleware
from core.api.openapi import openapi_document
from core.api.sse import (
    KEEPALIVE_S,
    MAX_SUBSCRIBERS,
    SSE_STREAMS,
    WRITE_TIMEOUT_S,
    EventStreams,
    stream_events,
)
from core.api.views import agent_view
from core.engine_api import EngineAPI
from core.errors import ValidationFailed
from core.models import AgentStatus, SpawnRequest

log = logging.getLogger(__name__)

ENGINE: web.AppKey[EngineAPI] = web.AppKey("engine", EngineAPI)
STARTED: web.AppKey[float] = web.AppKey("started", float)
AUTH: web.AppKey[bool] = web.AppKey("auth", bool)


def _engine(request: web.Request) -> EngineAPI:
    return request.app[ENGINE]


async def health(request: web.Request) -> web.Response:
    return web.json_response(
        {"status": "ok", "uptime": round(time.monotonic() - request.app[STARTED], 3)}
    )


async def ready(request: web.Request) -> web.Response:
    ok, checks = await _engine(request).ready()
    return web.json_response(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503
    )


async def spawn(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object")
    spawn_request = SpawnRequest.model_validate(body)
    result = await _engine(request).spawn(spawn_request)
    payload: dict[str, Any] = {"agentId": result.agent_id, "status": result.status.value}
    if result.existing:
        payload["existing"] = True
    return web.json_response(payload, status=202)


async def agent_status(request: web.Request) -> web.Response:
    agent = await _engine(request).status(request.match_info["agent_id"])
    return web.json_response(agent_view(agent))


async def list_agents(request: web.Request) -> web.Response:
    raw = request.query.get("status")
    status: AgentStatus | None = None
    if raw:
        try:
            status = AgentStatus(raw)
        except ValueError:
            allowed = ", ".join(s.value for s in AgentStatus)
            raise ValidationFailed(f"status must be one of {allowed}") from None
    agents = await _engine(request).list_agents(status)
    return web.json_response({"agents": [agent_view(a) for a in agents], "total": len(agents)})


async def kill(request: web.Request) -> web.Response:
    agent = await _engine(request).kill(request.match_info["agent_id"], who=principal(request))
    return web.json_response(agent_view(agent))


async def kill_all(request: web.Request) -> web.Response:
    result = await _engine(request).kill_all(who=principal(request))
    return web.json_response(result.model_dump())


async def events(request: web.Request) -> web.StreamResponse:
    return await stream_events(request, _engine(request))


async def queue_stats(request: web.Request) -> web.Response:
    stats = await _engine(request).queue_stats()
    return web.json_response(stats.model_dump())


async def pause(request: web.Request) -> web.Response:
    await _engine(request).pause()
    return web.json_response({"paused": True})


async def resume(request: web.Request) -> web.Response:
    await _engine(request).resume()
    return web.json_response({"paused": False})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(auth=request.app[AUTH]))


def create_app(
    engine: EngineAPI,
    *,
    api_key: str | None = None,
    max_body_bytes: int = 1_048_576,
    sse_keepalive_s: float = KEEPALIVE_S,
    sse_max_subscribers: int = MAX_SUBSCRIBERS,
    sse_write_timeout_s: float = WRITE_TIMEOUT_S,
    listen_host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
) -> web.Application:
    """The API; requests pass the cross-site guard, then auth, then reach their handler."""
    policy = HostPolicy(listen_host, allowed_hosts, allowed_origins)
    app = web.Application(
        middlewares=[error_middleware, guard_middleware(policy), auth_middleware(api_key)],
        client_max_size=max_body_bytes,
    )
    app[ENGINE] = engine
    app[STARTED] = time.monotonic()
    app[AUTH] = bool(api_key)
    streams = EventStreams(sse_max_subscribers, sse_keepalive_s, sse_write_timeout_s)
    app[SSE_STREAMS] = streams
    app.on_shutdown.append(streams.on_shutdown)
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_post("/agents/spawn", spawn)
    app.router.add_post("/agents/kill-all", kill_all)
    app.router.add_get("/agents/events", events)
    app.router.add_get("/agents", list_agents)
    app.router.add_get("/agents/{agent_id}/status", agent_status)
    app.router.add_post("/agents/{agent_id}/kill", kill)
    app.router.add_get("/queue/stats", queue_stats)
    app.router.add_post("/queue/pause", pause)
    app.router.add_post("/queue/resume", resume)
    app.router.add_get("/openapi.json", openapi)
    return app


@contextlib.asynccontextmanager
async def serve(
    engine: EngineAPI,
    *,
    host: str,
    port: int,
    api_key: str | None,
    max_body_bytes: int,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    sse_max_subscribers: int = MAX_SUBSCRIBERS,
) -> AsyncIterator[web.AppRunner]:
    """Run the API server until the block exits. ``runner.addresses`` tells the bound port."""
    app = create_app(
        engine,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        listen_host=host,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        sse_max_subscribers=sse_max_subscribers,
    )
    runner = web.AppRunner(app, shutdown_timeout=2.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        from core.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    log.info("API listening on %s", runner.addresses)
    try:
        yield runner
    finally:
        await runner.cleanup()
