"""Bearer-token auth (when ``ORCHESTRATOR_API_KEY`` is set) on every route but ``/health``."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from core.api.errors import Handler, error_response

OPEN_PATHS = frozenset({"/health"})


def auth_middleware(api_key: str | None) -> Middleware:
    expected = f"Bearer {api_key}".encode() if api_key else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            response = error_response(
                401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <key>)"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return middleware
