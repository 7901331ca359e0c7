"""The orchestrator as a service: the engine plus its API server, for the CLI and the dashboard."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from core.api.app import serve
from core.engine import Engine
from core.settings import Settings


@contextlib.asynccontextmanager
async def running_service(
    settings: Settings, *, subreaper: bool = True
) -> AsyncIterator[tuple[Engine, web.AppRunner]]:
    """Engine and API server for the block; on exit the API stops first, then the engine."""
    async with (
        Engine.running(settings, subreaper=subreaper) as engine,
        serve(
            engine,
            host=settings.orchestrator_host,
            port=settings.orchestrator_port,
            api_key=settings.orchestrator_api_key,
            max_body_bytes=settings.max_body_bytes,
            allowed_hosts=settings.orchestrator_allowed_hosts,
            allowed_origins=settings.orchestrator_allowed_origins,
            sse_max_subscribers=settings.sse_max_subscribers,
        ) as runner,
    ):
        yield engine, runner
