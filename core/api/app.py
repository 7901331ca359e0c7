"""The REST/SSE server (SPEC §3): thin handlers over ``EngineAPI``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web

from core.api.auth import auth_middleware, principal
from core.api.errors import (
    RepositoryNotFound,
    availability_middleware,
    error_middleware,
    read_json,
)
from core.api.guard import HostPolicy, guard_middleware
from core.api.openapi import openapi_document
from core.api.sse import (
    EVENT_ID,
    KEEPALIVE_S,
    MAX_SUBSCRIBERS,
    SSE_STREAMS,
    WRITE_TIMEOUT_S,
    EventStreams,
    stream_events,
)
from core.api.views import answer
from core.engine_api import EngineAPI
from core.errors import ValidationFailed
from core.git.errors import InvalidRepository
from core.models import (
    AGENT_ID_PATTERN,
    AgentList,
    AgentStatus,
    AgentView,
    Health,
    QueueState,
    Readiness,
    SpawnRequest,
)

log = logging.getLogger(__name__)

ENGINE: web.AppKey[EngineAPI] = web.AppKey("engine", EngineAPI)
STARTED: web.AppKey[float] = web.AppKey("started", float)
DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
STATUS_VALUES = tuple(s.value for s in AgentStatus)
EVENT_QUERY = ("lastEventId", "types", "agentId")


def _engine(request: web.Request) -> EngineAPI:
    return request.app[ENGINE]


async def health(request: web.Request) -> web.Response:
    return answer(Health(uptime=round(time.monotonic() - request.app[STARTED], 3)))


async def ready(request: web.Request) -> web.Response:
    ok, checks = await _engine(request).ready()
    readiness = Readiness.model_validate(
        {"status": "ready" if ok else "not_ready", "checks": checks}
    )
    return answer(readiness, status=200 if ok else 503)


async def spawn(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object")
    spawn_request = SpawnRequest.from_wire(await request.read())
    try:
        result = await _engine(request).spawn(spawn_request)
    except InvalidRepository as exc:
        if spawn_request.context.repository.startswith("/"):  # well formed: it is not there
            raise RepositoryNotFound(exc.message) from None
        raise
    return answer(result, status=202)


async def agent_status(request: web.Request) -> web.Response:
    return answer(AgentView.of(await _engine(request).status(request.match_info["agent_id"])))


async def agent_diff(request: web.Request) -> web.Response:
    text = await _engine(request).diff(request.match_info["agent_id"])
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def list_agents(request: web.Request) -> web.Response:
    given = request.query.getall("status", [])
    if len(given) > 1 or (given and given[0] not in STATUS_VALUES):
        raise ValidationFailed(
            f"status must be one of {', '.join(STATUS_VALUES)} (once), or absent"
        )
    status = AgentStatus(given[0]) if given else None
    agents = await _engine(request).list_agents(status)
    return answer(AgentList(agents=[AgentView.of(a) for a in agents], total=len(agents)))


async def kill(request: web.Request) -> web.Response:
    agent = await _engine(request).kill(request.match_info["agent_id"], who=principal(request))
    return answer(AgentView.of(agent))


async def kill_all(request: web.Request) -> web.Response:
    return answer(await _engine(request).kill_all(who=principal(request)))


async def events(request: web.Request) -> web.StreamResponse:
    for name in EVENT_QUERY:
        if len(request.query.getall(name, [])) > 1:
            raise ValidationFailed(f"{name} may be given once")
    last = request.query.get("lastEventId", "")
    if last and not EVENT_ID.fullmatch(last):  # checked even beside a Last-Event-ID header
        raise ValidationFailed("lastEventId must be an event id like 1712345678901-0")
    return await stream_events(request, _engine(request))


async def queue_stats(request: web.Request) -> web.Response:
    return answer(await _engine(request).queue_stats())


async def pause(request: web.Request) -> web.Response:
    await _engine(request).pause()
    return answer(QueueState(paused=True))


async def resume(request: web.Request) -> web.Response:
    await _engine(request).resume()
    return answer(QueueState(paused=False))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])


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
    # the in-process engine says whether Valkey answers (an attached client has no such flag)
    available = getattr(engine, "store_available", None)
    outage = availability_middleware(
        (lambda: bool(getattr(engine, "store_available", True))) if available is not None else None
    )
    app = web.Application(
        middlewares=[error_middleware, guard_middleware(policy), auth_middleware(api_key), outage],
        client_max_size=max_body_bytes,
    )
    app[ENGINE] = engine
    app[STARTED] = time.monotonic()
    skills = getattr(engine, "skill_names", None)
    runtimes = getattr(engine, "runtime_names", None)
    app[DOCUMENT] = openapi_document(
        auth=bool(api_key),
        max_body_bytes=max_body_bytes,
        skills=skills() if callable(skills) else None,
        runtimes=runtimes() if callable(runtimes) else None,
    )
    streams = EventStreams(sse_max_subscribers, sse_keepalive_s, sse_write_timeout_s)
    app[SSE_STREAMS] = streams
    app.on_shutdown.append(streams.on_shutdown)
    app.router.add_get("/health", health)
    app.router.add_get("/health/ready", ready)
    app.router.add_post("/agents/spawn", spawn)
    app.router.add_post("/agents/kill-all", kill_all)
    app.router.add_get("/agents/events", events)
    app.router.add_get("/agents", list_agents)
    agent = "/agents/{agent_id:" + AGENT_ID_PATTERN.strip("^$") + "}"  # else 404, as unknown
    app.router.add_get(agent + "/status", agent_status)
    app.router.add_get(agent + "/diff", agent_diff)
    app.router.add_post(agent + "/kill", kill)
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
