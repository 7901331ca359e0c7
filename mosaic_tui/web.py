"""``mosaic-orchestrator web``: the dashboard in a browser (SPEC §20), served with textual-serve.

Each browser session (one websocket) runs its own ``mosaic-orchestrator attach URL`` process
under Textual's web driver, so keys typed in the page drive an attached dashboard exactly as in a
terminal, and closing the tab only detaches. The API key reaches that process through its
environment, never its argv (``ps`` shows argv) and never the page.

The server drives a dashboard that can kill agents, so a page the operator happens to open must
not reach it (CSRF, DNS rebinding, framing):

- every request, the websocket upgrade too, passes the API's own Host/Origin guard
  (``core.api.guard``): a foreign ``Host`` or a foreign ``Origin`` is 403;
- when an API key is set, every request must be authenticated: ``?token=<key>`` once sets an
  HttpOnly, SameSite=Strict cookie holding a random per-server secret (not the key) and redirects
  to the same URL without the token; ``Authorization: Bearer <key>`` works too. Both compare in
  constant time. Anything else is 401;
- the page may not be framed, caches nothing and loads nothing from elsewhere (CSP).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import logging
import secrets
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from textual_serve.app_service import AppService
from textual_serve.download_manager import DownloadManager
from yarl import URL

from core.api.errors import Handler, error_response
from core.api.guard import HostPolicy, guard_middleware
from core.errors import ConfigError
from core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_PORT = 3002
TOKEN_ENV = "ORCHESTRATOR_API_KEY"
# an attached dashboard needs the API's URL and key only: the model's keys and the store's
# credentials (which an in-process engine's environment holds) stay out of its sessions
NOT_FOR_SESSIONS = frozenset(
    {TOKEN_ENV, "CLAUDE_API_KEY", "ANTHROPIC_API_KEY", "VALKEY_PASSWORD", "VALKEY_URL"}
)
MAX_SESSIONS = 8
MAX_MESSAGE_BYTES = 64 * 1024
STOP_TIMEOUT_S = 5.0
STATIC_DIR = Path(str(files("textual_serve") / "static"))


@dataclass(frozen=True)
class WebConfig:
    """What the web server serves: the API its sessions attach to and who may use it."""

    api_url: str
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_sessions: int = MAX_SESSIONS
    python: str = sys.executable

    def session_command(self) -> str:
        """The shell command of one session: an attached dashboard, without any secret.

        ``exec``: the shell textual-serve starts becomes the dashboard, so stopping that one
        process stops the session."""
        return "exec " + shlex.join([self.python, "-m", "mosaic_tui", "attach", self.api_url])

    def session_environment(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with the API key set (or removed): the one way the key reaches a session."""
        env = {k: v for k, v in base.items() if k.upper() not in NOT_FOR_SESSIONS}
        if self.api_key:
            env[TOKEN_ENV] = self.api_key
        return env


class _Session(AppService):
    """One browser session's dashboard process, with the key in its environment only."""

    def __init__(self, config: WebConfig, **kwargs: Any) -> None:
        super().__init__(config.session_command(), **kwargs)
        self.config = config

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        return self.config.session_environment(super()._build_environment(width, height))

    async def run(self) -> None:
        try:
            await super().run()
        finally:  # the dashboard ended (quit, or it could not start): so does the page's session
            await self.remote_close()

    async def close(self) -> None:
        """Ask the dashboard to quit; kill it if it does not within ``STOP_TIMEOUT_S``."""
        try:
            await asyncio.wait_for(self.stop(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("web session did not quit in %.0f s: killing it", STOP_TIMEOUT_S)
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@dataclass
class _State:
    config: WebConfig
    cookie_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    sessions: dict[web.WebSocketResponse, _Session] = field(default_factory=dict)
    downloads: DownloadManager = field(default_factory=DownloadManager)


STATE: web.AppKey[_State] = web.AppKey("mosaic_web", _State)


def auth_middleware(state: _State) -> Middleware:
    """Require the API key (query once, then cookie; or a bearer header) when one is set."""
    key = state.config.api_key

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not key:
            return await handler(request)
        given = request.query.get("token")
        if given is not None:
            if not _same(given, key):
                return _unauthorized("wrong token")
            # always to the page itself: the request's path could be "//elsewhere" (open redirect)
            kept = [(k, v) for k, v in request.query.items() if k != "token"]
            target = URL.build(path="/", query=kept)
            response = web.Response(status=303, headers={hdrs.LOCATION: str(target)})
            response.set_cookie(
                cookie_name(request),
                state.cookie_secret,
                httponly=True,
                samesite="Strict",
                path="/",
                secure=request.secure,
            )
            response.headers[hdrs.CACHE_CONTROL] = "no-store"
            return response
        cookie = request.cookies.get(cookie_name(request), "")
        bearer = request.headers.get(hdrs.AUTHORIZATION, "")
        if _same(cookie, state.cookie_secret) or _same(bearer, f"Bearer {key}"):
            return await handler(request)
        return _unauthorized("this dashboard needs the API key")

    return middleware


def cookie_name(request: web.Request) -> str:
    # cookies are per host, not per port: name the port so two servers do not collide
    return f"mosaic_web_{request.url.port}"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _unauthorized(why: str) -> web.Response:
    response = error_response(
        401,
        "unauthorized",
        f"{why}: open /?token=<ORCHESTRATOR_API_KEY> once (a cookie keeps the session), "
        "or send Authorization: Bearer <key>",
    )
    response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
    return response


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Mosaic Orchestrator</title>
<link rel="stylesheet" href="/static/css/xterm.css">
<script src="/static/js/textual.js"></script>
<style>
@font-face { font-family: "Roboto Mono";
  src: url("/static/fonts/RobotoMono-VariableFont_wght.ttf") format("truetype"); }
html, body { margin: 0; height: 100%; background: #0c181f; color: #e0e0e0;
  font-family: "Roboto Mono", monospace; }
.textual-terminal { position: absolute; inset: 0; }
.closed { display: none; position: absolute; inset: 0; z-index: 10; background: #0c181fe0;
  align-items: center; justify-content: center; flex-direction: column; }
body.-closed .closed { display: flex; }
.closed a { color: #ac5af4; margin-top: 1em; }
</style>
</head>
<body>
<div class="closed">
<div>Session ended: the agents keep running.</div><a href="/">Reconnect</a>
</div>
<div id="terminal" class="textual-terminal" data-session-websocket-url="$ws" data-font-size="$fs">
</div>
</body>
</html>
"""


def _page_headers(ws_url: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            f"connect-src 'self' {ws_url}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        hdrs.CACHE_CONTROL: "no-store",
    }


async def handle_index(request: web.Request) -> web.Response:
    # the websocket is on the very host the browser asked for (the guard has vetted it)
    scheme = "wss" if request.secure else "ws"
    ws_url = f"{scheme}://{request.host}/ws"
    font_size = _bounded(request.query.get("fontsize"), 16, 8, 48)
    body = PAGE.replace("$ws", html.escape(ws_url)).replace("$fs", str(font_size))
    return web.Response(text=body, content_type="text/html", headers=_page_headers(ws_url))


def _bounded(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value or default), low), high)
    except ValueError:
        return default


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if len(state.sessions) >= state.config.max_sessions:
        return error_response(
            503, "too_many_sessions", f"{state.config.max_sessions} dashboards are open already"
        )
    width = _bounded(request.query.get("width"), 80, 20, 500)
    height = _bounded(request.query.get("height"), 24, 5, 300)
    socket = web.WebSocketResponse(heartbeat=15, max_msg_size=MAX_MESSAGE_BYTES)
    await socket.prepare(request)
    session = _Session(
        state.config,
        write_bytes=socket.send_bytes,
        write_str=socket.send_str,
        close=socket.close,
        download_manager=state.downloads,
    )
    state.sessions[socket] = session
    try:
        await session.start(width, height)
        await _pump(socket, session)
    finally:
        state.sessions.pop(socket, None)
        await session.close()
        await socket.close()
    return socket


async def _pump(socket: web.WebSocketResponse, session: AppService) -> None:
    """Browser messages -> the session: keys, resizes, focus; malformed ones are dropped."""
    async for message in socket:
        if message.type != WSMsgType.TEXT:
            continue
        try:
            envelope = json.loads(message.data)
            kind, data = envelope[0], envelope[1] if len(envelope) > 1 else None
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        if kind == "stdin" and isinstance(data, str):
            await session.send_bytes(data.encode("utf-8"))
        elif kind == "resize" and isinstance(data, dict):
            width = _bounded(str(data.get("width")), 80, 20, 500)
            height = _bounded(str(data.get("height")), 24, 5, 300)
            await session.set_terminal_size(width, height)
        elif kind == "ping":
            await socket.send_json(["pong", data])
        elif kind == "blur":
            await session.blur()
        elif kind == "focus":
            await session.focus()


async def _close_sessions(app: web.Application) -> None:
    # here, not only in the handlers: the runner cancels handlers that outlast its timeout
    sessions = list(app[STATE].sessions.items())
    for socket, _ in sessions:
        await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")
    await asyncio.gather(*(session.close() for _, session in sessions))


def create_web_app(config: WebConfig) -> web.Application:
    state = _State(config)
    policy = HostPolicy(config.host, config.allowed_hosts, config.allowed_origins)
    app = web.Application(middlewares=[guard_middleware(policy), auth_middleware(state)])
    app[STATE] = state
    app.router.add_get("/", handle_index)
    app.router.add_get("/ws", handle_websocket)
    app.router.add_static("/static", STATIC_DIR)
    app.on_shutdown.append(_close_sessions)
    return app


class AccessLogger(AbstractAccessLogger):
    """Access lines without the query string: ``?token=`` must not reach a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


@contextlib.asynccontextmanager
async def serve_web(config: WebConfig) -> AsyncIterator[web.AppRunner]:
    """The web dashboard server for the block; on exit every session's dashboard is stopped."""
    runner = web.AppRunner(
        create_web_app(config),
        shutdown_timeout=2.0,
        handle_signals=False,
        access_log_class=AccessLogger,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
        ) from None
    try:
        yield runner
    finally:
        await runner.cleanup()


def page_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def api_url_of(runner: web.AppRunner) -> str:
    """Where a session reaches an in-process API: its address, loopback for a wildcard."""
    host, port = runner.addresses[0][:2]
    return reachable_url(str(host), int(port))


def reachable_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def run_web(
    config: WebConfig, until: Callable[[], Awaitable[None]], *, in_process: bool = False
) -> None:
    """Serve ``config`` until ``until`` returns; checks first that the API answers the key."""
    from mosaic_tui.remote import RemoteEngine

    async with RemoteEngine(config.api_url, config.api_key) as probe:
        await probe.queue_stats()  # one clear line now rather than a blank page later
    from core.weborigin import is_loopback

    if not config.api_key and not is_loopback(config.host.strip("[]")):
        print(
            f"mosaic-orchestrator: warning: the web dashboard listens on {config.host} without "
            "an API key: anyone who reaches it can kill agents (set ORCHESTRATOR_API_KEY)",
            file=sys.stderr,
            flush=True,
        )
    async with serve_web(config) as runner:
        where = "the orchestrator in this process" if in_process else config.api_url
        hint = " (open it once with ?token=<ORCHESTRATOR_API_KEY>)" if config.api_key else ""
        print(
            f"mosaic-orchestrator: dashboard on {page_url(runner)}{hint}, attached to {where}",
            flush=True,
        )
        await until()


async def run_web_command(
    settings: Settings,
    *,
    url: str | None,
    host: str,
    port: int,
    token: str | None,
    until: Callable[[], Awaitable[None]],
) -> None:
    """``web [URL]``: attach sessions to ``URL``, or run the engine and API here and to it."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid web port {port}: must be 0-65535")
    key = token or settings.orchestrator_api_key
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "allowed_hosts": settings.orchestrator_allowed_hosts,
        "allowed_origins": settings.orchestrator_allowed_origins,
    }
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid URL {url[:100]!r}: must be like http://host:3001")
        await run_web(WebConfig(api_url=url.rstrip("/"), api_key=key, **common), until)
        return
    from core.api.service import running_service

    if token:
        settings = settings.model_copy(update={"orchestrator_api_key": token})
    async with running_service(settings) as (_engine, api):
        print(f"mosaic-orchestrator: engine and API on {api_url_of(api)}", flush=True)
        config = WebConfig(api_url=api_url_of(api), api_key=key, **common)
        await run_web(config, until, in_process=True)
        print("mosaic-orchestrator: stopping (killing live agents)", flush=True)
