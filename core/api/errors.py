"""One place that maps errors to HTTP answers: ``{error: {code, message, details}}``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.exceptions
from aiohttp import web
from pydantic import ValidationError

from core.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    NotReady,
    OrchestratorError,
    StoreUnavailable,
    ValidationFailed,
)
from core.models import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)

STATUS: list[tuple[type[OrchestratorError], int]] = [
    (ValidationFailed, 400),
    (NotFound, 404),
    (Conflict, 409),
    (IllegalTransition, 409),
    (NotReady, 503),
]


class RepositoryNotFound(NotFound):
    """A spawn names a local path, well formed, that is not a git repository (HTTP 404)."""

    code = "repository_not_found"


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return web.json_response(body.model_dump(mode="json"), status=status)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ValidationError as exc:
        details = validation_details(exc)
        first = details[0] if details else {"field": "body", "message": "invalid"}
        return error_response(
            400, "invalid_request", f"{first['field']}: {first['message']}", details
        )
    except OrchestratorError as exc:
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
        if status == 500:
            log.error("request failed: %s", exc.message)
        return error_response(status, exc.code, exc.message, exc.details)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("Valkey unreachable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, StoreUnavailable.code, f"Valkey is not reachable: {exc}")
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, "body_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason)
        if "Allow" in exc.headers:  # a 405 names the methods the route has
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the orchestrator log")


async def read_json(request: web.Request) -> Any:
    """The JSON body (its media type was checked by the guard: ``core/api/guard.py``)."""
    raw = await request.read()
    if not raw:
        raise ValidationFailed("request body is empty; a JSON object is required")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"request body is not valid JSON: {exc}") from None


OUTAGE_RETRY_AFTER_S = 1
OPEN_DURING_OUTAGE = frozenset({"/health", "/health/ready", "/openapi.json"})
"""Routes that answer while Valkey is down: liveness, readiness (503 with its checks), the
document."""


def availability_middleware(available: Callable[[], bool] | None) -> Any:
    """While Valkey does not answer (``available()`` is false), every route but
    :data:`OPEN_DURING_OUTAGE` answers 503 ``store_unavailable`` at once, without waiting for a
    timeout (SPEC §19)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if available is not None and request.path not in OPEN_DURING_OUTAGE and not available():
            response = error_response(
                503,
                StoreUnavailable.code,
                "Valkey is not reachable; retry when /health/ready is 200",
            )
            response.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
            return response
        return await handler(request)

    return middleware
