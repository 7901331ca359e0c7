"""Cross-site and DNS-rebinding defences (SPEC §18), checked before auth and before any handler.

A web page the operator opens can make the browser send requests to the loopback API. Three rules
keep it from having any effect:

1. **Host.** The ``Host`` header must name this server: a loopback name (``localhost``,
   ``127.0.0.0/8``, ``::1``), the listen address, or an ``ORCHESTRATOR_ALLOWED_HOSTS`` entry (``*``:
   any). When the API listens on a wildcard address (``0.0.0.0``, ``::``) any IP address is
   accepted too: DNS rebinding needs a name, and a page served from an IP address is its own origin.
   Else 403 ``forbidden_host``, on every route (``/health`` and SSE too).
2. **Origin.** Browsers send ``Origin`` with every cross-origin request and every POST. When present
   it must be the API's own origin (``http://<Host>``) or an ``ORCHESTRATOR_ALLOWED_ORIGINS`` entry;
   else (``null`` too) 403 ``forbidden_origin``. curl and the SDKs send none and are not affected.
3. **Media type.** A request with a body must say ``Content-Type: application/json``. A POST
   without a body may carry no ``Content-Type``, ``application/json`` or
   ``application/octet-stream`` (what aiohttp and other clients send with an empty body). Anything
   else is 415 ``unsupported_media_type``. This closes what a browser can send without a CORS
   preflight even if it omitted ``Origin`` (old browsers on form posts): HTML forms and "simple"
   requests always carry ``application/x-www-form-urlencoded``, ``multipart/form-data`` or
   ``text/plain``, even empty; any other type makes the browser ask first (with ``Origin``).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from core.api.errors import Handler, error_response
from core.weborigin import WILDCARD_ADDRESSES, host_name, is_ip, is_loopback, origin_of

JSON = "application/json"
EMPTY_BODY_TYPES = frozenset({JSON, "application/octet-stream"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class HostPolicy:
    """Which ``Host`` names and ``Origin`` values the API serves."""

    def __init__(
        self, listen_host: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]
    ) -> None:
        listen = listen_host.strip().strip("[]").lower()
        self.any_ip = listen in WILDCARD_ADDRESSES
        self.hosts = {h.lower() for h in allowed_hosts}
        if not self.any_ip:
            self.hosts.add(listen)
        self.any_host = "*" in self.hosts
        self.origins = {o for o in (origin_of(v) for v in allowed_origins) if o is not None}

    def host_allowed(self, name: str | None) -> bool:
        if name is None:
            return False
        return (
            self.any_host
            or is_loopback(name)
            or name in self.hosts
            or (self.any_ip and is_ip(name))
        )

    def origin_allowed(self, origin: str, scheme: str, host: str | None) -> bool:
        given = origin_of(origin)
        if given is None:
            return False
        if given in self.origins:
            return True
        return host is not None and given == origin_of(f"{scheme}://{host}")


def guard_middleware(policy: HostPolicy) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST)
        if host is not None and not policy.host_allowed(host_name(host)):
            return error_response(
                403,
                "forbidden_host",
                f"Host {host[:100]!r} is not a name of this server; "
                "add it to ORCHESTRATOR_ALLOWED_HOSTS to serve it",
            )
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not policy.origin_allowed(origin, request.scheme, host):
            return error_response(
                403,
                "forbidden_origin",
                f"cross-origin request from {origin[:100]!r} refused; "
                "add the origin to ORCHESTRATOR_ALLOWED_ORIGINS to allow it",
            )
        if not _media_type_ok(request):
            shown = request.headers.get(hdrs.CONTENT_TYPE, "none")[:100]
            return error_response(
                415,
                "unsupported_media_type",
                f"Content-Type must be {JSON} (got {shown}); a POST without a body may omit it",
            )
        return await handler(request)

    return middleware


def _media_type_ok(request: web.Request) -> bool:
    declared = hdrs.CONTENT_TYPE in request.headers
    if request.body_exists:
        return declared and request.content_type == JSON
    if request.method in SAFE_METHODS or not declared:
        return True
    return request.content_type in EMPTY_BODY_TYPES
