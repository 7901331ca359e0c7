"""The model gateway: the only way a sandboxed agent reaches the model.

The orchestrator listens on one Unix socket per agent (``<socket_dir>/model.sock``, mode 0600, in a
directory the spawner binds into the sandbox). A request must carry the agent's random token (the
runtime sends it as its "API key", i.e. ``Authorization: Bearer <token>``); the gateway swaps it for
the real key, forwards ``POST /v1/messages`` (streaming SSE passed through chunk by chunk, or JSON)
and ``POST /v1/messages/count_tokens`` to the upstream, and refuses everything else. It enforces the
agent's token budget, records usage and cost, and reports each response's usage to ``on_usage``.
The key never enters a sandbox and never appears in logs or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from core.agents.errors import GatewayError
from core.agents.httpserve import RunningServer, error_response, serve_unix
from core.agents.prices import PriceTable
from core.agents.usage import UsageMeter
from core.models import Usage

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
SOCKET_NAME = "model.sock"
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_UNIX_PATH = 107
ALLOWED_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
FORWARD_REQUEST_HEADERS = (
    "content-type",
    "accept",
    "anthropic-version",
    "anthropic-beta",
    "user-agent",
)
FORWARD_RESPONSE_HEADERS = (
    "content-type",
    "request-id",
    "retry-after",
    "x-should-retry",
    "cache-control",
)

OnUsage = Callable[[str, Usage], Awaitable[None]]


def model_config_problem(api_key: str | None, base_url: str | None) -> str | None:
    """Why a Claude agent cannot be spawned with this configuration, or None when it can.

    A key is needed for Anthropic's API; a base URL without a key is fine (e.g. the scripted model).
    """
    if base_url and not base_url.startswith(("http://", "https://")):
        return f"ANTHROPIC_BASE_URL must be an http:// or https:// URL, not {base_url!r}"
    if not api_key and not base_url:
        return (
            "no model credentials: set CLAUDE_API_KEY (or ANTHROPIC_API_KEY) to use "
            "Anthropic's API, or ANTHROPIC_BASE_URL to use a keyless Messages-API endpoint "
            "such as the scripted model"
        )
    return None


@dataclass
class AgentEndpoint:
    """One agent's gateway socket. ``usage`` accumulates over the agent's session."""

    agent_id: str
    socket_path: Path
    token: str = field(repr=False)
    token_budget: int | None
    usage: Usage = field(default_factory=Usage)

    @property
    def tokens_used(self) -> int:
        return self.usage.input_tokens + self.usage.output_tokens


class ModelGateway:
    def __init__(
        self,
        upstream: str | None,
        api_key: str | None,
        prices: PriceTable,
        on_usage: OnUsage,
        *,
        auth_header: Literal["bearer", "x-api-key"] = "bearer",
    ) -> None:
        configured = upstream or os.environ.get("ANTHROPIC_BASE_URL") or None
        problem = model_config_problem(api_key, configured)
        if problem:
            raise GatewayError(problem)
        self.upstream = (configured or DEFAULT_UPSTREAM).rstrip("/")
        self._api_key = api_key
        self._auth_header = auth_header
        self.prices = prices
        self.on_usage = on_usage
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, AgentEndpoint] = {}

    def __repr__(self) -> str:
        return f"ModelGateway(upstream={self.upstream!r}, agents={len(self._endpoints)})"

    @property
    def endpoints(self) -> dict[str, AgentEndpoint]:
        return dict(self._endpoints)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
                auto_decompress=False,
            )
        return self._session

    @contextlib.asynccontextmanager
    async def serve_agent(
        self, agent_id: str, socket_dir: Path, token_budget: int | None
    ) -> AsyncIterator[AgentEndpoint]:
        """Serve one agent on ``socket_dir/model.sock`` for the duration of the block."""
        if agent_id in self._endpoints:
            raise GatewayError(f"agent {agent_id} already has a gateway socket")
        if token_budget is not None and token_budget <= 0:
            raise GatewayError("token_budget must be positive (or None for no budget)")
        path = Path(socket_dir) / SOCKET_NAME
        if len(str(path).encode()) > MAX_UNIX_PATH:
            raise GatewayError(f"gateway socket path is too long for a Unix socket: {path}")
        try:
            await asyncio.to_thread(Path(socket_dir).mkdir, mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise GatewayError(
                f"cannot create gateway socket dir {socket_dir}: {exc.strerror}"
            ) from None
        if path.exists() or path.is_symlink():
            raise GatewayError(
                f"gateway socket {path} already exists (it belongs to another agent)"
            )
        endpoint = AgentEndpoint(agent_id, path, secrets.token_urlsafe(32), token_budget)
        running: RunningServer | None = None
        self._endpoints[agent_id] = endpoint
        try:
            try:
                running = await serve_unix(lambda request: self._handle(endpoint, request), path)
                os.chmod(path, 0o600)
            except OSError as exc:
                raise GatewayError(
                    f"cannot listen on gateway socket {path}: {exc.strerror}"
                ) from None
            log.debug("gateway serving agent %s on %s", agent_id, path)
            yield endpoint
        finally:
            self._endpoints.pop(agent_id, None)
            if running is not None:
                await running.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.debug("gateway socket of agent %s closed", agent_id)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> ModelGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- request handling -------------------------------------------------------------------

    def _authorized(self, endpoint: AgentEndpoint, request: BaseRequest) -> bool:
        presented = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        return bool(presented) and hmac.compare_digest(presented.encode(), endpoint.token.encode())

    async def _handle(self, endpoint: AgentEndpoint, request: BaseRequest) -> StreamResponse:
        if not self._authorized(endpoint, request):
            log.warning(
                "gateway: refused a request with a wrong token on agent %s's socket",
                endpoint.agent_id,
            )
            return error_response(
                401, "authentication_error", "invalid gateway token for this agent"
            )
        if request.path not in ALLOWED_PATHS:
            return error_response(
                404, "not_found_error", f"the model gateway does not serve {request.path}"
            )
        if request.method != "POST":
            return error_response(
                405, "invalid_request_error", f"method {request.method} not allowed"
            )
        counting = request.path.endswith("/count_tokens")
        if (
            not counting
            and endpoint.token_budget is not None
            and endpoint.tokens_used >= endpoint.token_budget
        ):
            return error_response(
                402,
                "billing_error",
                f"token budget exhausted for agent {endpoint.agent_id}: "
                f"used {endpoint.tokens_used} of {endpoint.token_budget} tokens",
            )
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return error_response(
                413, "request_too_large", f"request body over {MAX_BODY_BYTES} bytes"
            )
        model = _model_of(body)
        if model is None:
            return error_response(
                400, "invalid_request_error", "request body must be a JSON object"
            )
        headers = {
            k: v for k in FORWARD_REQUEST_HEADERS if (v := request.headers.get(k)) is not None
        }
        headers["accept-encoding"] = "identity"
        if self._api_key:
            if self._auth_header == "bearer":
                headers["authorization"] = f"Bearer {self._api_key}"
            else:
                headers["x-api-key"] = self._api_key
        url = (
            self.upstream
            + request.path
            + (f"?{request.query_string}" if request.query_string else "")
        )
        meter = UsageMeter()
        try:
            async with self._client().post(url, data=body, headers=headers) as upstream:
                out_headers = _response_headers(upstream)
                streaming = upstream.content_type == "text/event-stream"
                if streaming and upstream.status == 200:
                    response = StreamResponse(status=upstream.status, headers=out_headers)
                    await response.prepare(request)
                    try:
                        async for chunk in upstream.content.iter_any():
                            meter.feed(chunk)
                            await response.write(chunk)
                        await response.write_eof()
                    finally:
                        if not counting:
                            await self._record(endpoint, model, meter)
                    return response
                data = await upstream.read()
                if upstream.status == 200 and not counting:
                    meter.from_message(data)
                    await self._record(endpoint, model, meter)
                elif upstream.status != 200:
                    log.info(
                        "gateway: upstream answered %s for agent %s",
                        upstream.status,
                        endpoint.agent_id,
                    )
                return Response(status=upstream.status, body=data, headers=out_headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning(
                "gateway: upstream unreachable for agent %s: %s",
                endpoint.agent_id,
                type(exc).__name__,
            )
            return error_response(
                502,
                "api_error",
                f"the model gateway cannot reach the model upstream ({type(exc).__name__})",
            )

    async def _record(self, endpoint: AgentEndpoint, model: str, meter: UsageMeter) -> None:
        if not meter.seen:
            return
        delta = Usage(
            input_tokens=meter.input_tokens,
            output_tokens=meter.output_tokens,
            cost_usd=self.prices.cost(model, meter.input_tokens, meter.output_tokens),
            turns=1,
        )
        total = endpoint.usage
        endpoint.usage = Usage(
            input_tokens=total.input_tokens + delta.input_tokens,
            output_tokens=total.output_tokens + delta.output_tokens,
            cost_usd=total.cost_usd + delta.cost_usd,
            turns=total.turns + 1,
        )
        try:
            await self.on_usage(endpoint.agent_id, delta)
        except Exception:
            log.exception("gateway: on_usage failed for agent %s", endpoint.agent_id)


def _model_of(body: bytes) -> str | None:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    return str(parsed.get("model", ""))


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    headers = {k: upstream.headers[k] for k in FORWARD_RESPONSE_HEADERS if k in upstream.headers}
    for key, value in upstream.headers.items():
        if key.lower().startswith("anthropic-"):
            headers[key] = value
    if "content-encoding" in upstream.headers:
        headers["content-encoding"] = upstream.headers["content-encoding"]
    return headers
