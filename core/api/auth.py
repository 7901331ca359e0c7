"""Bearer-token auth (when ``ORCHESTRATOR_API_KEY`` is set) on every route but ``/health``.

Every request gets its principal (``PRINCIPAL``), the name audit records give it: ``bearer:<id>``
when it presented the key (``id``: the first hex digits of the key's SHA-256, so that a rotated key
shows), else ``anonymous``; either way ``@<peer address>``. It never comes from a header the client
chose.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from core.api.errors import Handler, error_response

OPEN_PATHS = frozenset({"/health"})
PRINCIPAL: web.RequestKey[str] = web.RequestKey("principal", str)


def key_id(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:4]


def principal(request: web.Request) -> str:
    """Who made the request, for audit records."""
    return request.get(PRINCIPAL) or f"anonymous@{request.remote or 'unknown'}"


def auth_middleware(api_key: str | None) -> Middleware:
    expected = f"Bearer {api_key}".encode() if api_key else None
    name = f"bearer:{key_id(api_key)}" if api_key else "anonymous"  # the key's holder

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        who = "anonymous"
        if expected is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                response = error_response(
                    401,
                    "unauthorized",
                    "missing or wrong bearer token (Authorization: Bearer <key>)",
                )
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            who = name
        request[PRINCIPAL] = f"{who}@{request.remote or 'unknown'}"
        return await handler(request)

    return middleware
