"""The model gateway: the only way a sandboxed agent reaches the model.

The orchestrator listens on one Unix socket per agent (``<socket_dir>/model.sock``, mode 0600, in a
directory the spawner binds into the sandbox). A request must carry the agent's random token (the
runtime sends it as its "API key", i.e. ``Authorization: Bearer <token>``); the gateway swaps it for
the real key, forwards ``POST /v1/messages`` (streaming SSE passed through chunk by chunk, or JSON)
and ``POST /v1/messages/count_tokens`` to the upstream, and refuses everything else. It records
usage and cost, and reports each response's usage to ``on_usage``. The key never enters a sandbox
and never appears in logs or errors.

Budgets hold against an agent that calls the gateway directly, in parallel (``admission.py``): each
request reserves its input tokens plus its ``max_tokens`` before it is forwarded (``max_tokens`` is
lowered to what is left, a request with no room left is refused with 402 ``billing_error``), and
the reservation is settled with the real usage; at most ``max_inflight`` requests of an agent are in
flight (more wait in a bounded queue, then 429); ``count_tokens`` is rate-limited and counted.

The upstream's rate limits are shared (``ratelimit.py``): a 429 or 529 holds every agent's
requests until the time it gives, then the refused request is retried, so the agent only sees a
slower answer; the refusal reaches the agent only when the hold would outlast the agent's deadline.
Each limit episode is reported once to ``on_rate_limited``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from core.agents.admission import (
    FRAME_TOKENS,
    RateLimit,
    Refused,
    Reservation,
    Slots,
    TokenBudget,
    budget_refusal,
    cap_max_tokens,
    count_request,
    input_bound,
)
from core.agents.errors import GatewayError
from core.agents.httpserve import RunningServer, error_response, serve_unix
from core.agents.prices import PriceTable
from core.agents.ratelimit import LIMIT_STATUSES, OnRateLimited, RateLimitGate, SharedRateLimit
from core.agents.usage import UsageMeter
from core.models import Usage

log = logging.getLogger(__name__)

DEFAULT_UPSTREAM = "https://api.anthropic.com"
SOCKET_NAME = "model.sock"
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_UNIX_PATH = 107
COUNT_TIMEOUT_S = 30.0
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
Outcome = Literal["aborted", "answered", "unreachable"]


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
    count_calls: int = 0
    """``count_tokens`` requests forwarded (they are not model usage)."""
    deadline: float | None = None
    """The agent's wall-time end (``time.monotonic()``): no rate-limit hold is waited past it."""
    slots: Slots = field(default_factory=lambda: Slots(4, max_waiting=16, wait_s=300.0), repr=False)
    counts: RateLimit = field(default_factory=lambda: RateLimit(60, 10), repr=False)
    budget: TokenBudget = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.budget = TokenBudget(self.token_budget)

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
        max_inflight: int = 4,
        max_waiting: int = 16,
        wait_s: float = 300.0,
        count_tokens_per_min: int = 60,
        on_rate_limited: OnRateLimited | None = None,
        rate_limit: SharedRateLimit | None = None,
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
        self.max_inflight = max_inflight
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.count_tokens_per_min = count_tokens_per_min
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, AgentEndpoint] = {}
        self.limits = rate_limit or SharedRateLimit()
        self._limited = RateLimitGate(self.limits, on_rate_limited)

    def __repr__(self) -> str:
        return f"ModelGateway(upstream={self.upstream!r}, agents={len(self._endpoints)})"

    @property
    def endpoints(self) -> dict[str, AgentEndpoint]:
        return dict(self._endpoints)

    @property
    def rate_limited_until(self) -> datetime | None:
        """When the upstream's rate limit ends (UTC), None when none holds."""
        return self.limits.until

    async def wait_clear(self, deadline: float | None = None) -> bool:
        """Return once no rate limit holds (True), or at once (False) when the current hold would
        outlast ``deadline`` (``time.monotonic()`` seconds; None: wait as long as it takes)."""
        return await self.limits.wait(deadline)

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
        self,
        agent_id: str,
        socket_dir: Path,
        token_budget: int | None,
        deadline: float | None = None,
    ) -> AsyncIterator[AgentEndpoint]:
        """Serve one agent on ``socket_dir/model.sock`` for the duration of the block.

        ``deadline`` (``time.monotonic()`` seconds, e.g. start plus the agent's wall-time budget):
        a rate-limit hold that would outlast it is not waited for; the agent gets the refusal.
        """
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
        endpoint = AgentEndpoint(
            agent_id,
            path,
            secrets.token_urlsafe(32),
            token_budget,
            slots=Slots(self.max_inflight, max_waiting=self.max_waiting, wait_s=self.wait_s),
            counts=RateLimit(self.count_tokens_per_min, max(1, self.count_tokens_per_min // 6)),
            deadline=deadline,
        )
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
        """The token as ``x-api-key`` (Claude Code, the SDKs' API key) or ``Authorization:
        Bearer`` (an auth token); when both are sent, both must be the agent's."""
        presented = [request.headers.get("x-api-key")]
        auth = request.headers.get("authorization")
        if auth is not None:
            presented.append(auth[7:].strip() if auth[:7].lower() == "bearer " else "")
        given = [p for p in presented if p is not None]
        expected = endpoint.token.encode()
        return bool(given) and all(
            hmac.compare_digest(p.encode(errors="replace"), expected) for p in given
        )

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
        try:
            return await self._admit(endpoint, request)
        except Refused as exc:
            response = error_response(
                exc.status, exc.kind, exc.message, retry=exc.retry_after is not None
            )
            if exc.retry_after is not None:
                response.headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
            return response

    async def _admit(self, endpoint: AgentEndpoint, request: BaseRequest) -> StreamResponse:
        """Budget, count_tokens rate and in-flight checks, then the upstream exchange."""
        counting = request.path.endswith("/count_tokens")
        if endpoint.budget.exhausted:
            raise budget_refusal(endpoint.agent_id, endpoint.budget)
        if counting and (wait := endpoint.counts.take()):
            raise Refused(
                429,
                "rate_limit_error",
                f"count_tokens is limited to {self.count_tokens_per_min} a minute for each agent",
                retry_after=wait,
            )
        if (refusal := await self._limited.clear(endpoint.agent_id, endpoint.deadline)) is not None:
            return refusal
        async with endpoint.slots.hold(endpoint.agent_id):
            body = await _read_body(request)
            parsed = _json_object(body)
            if parsed is None:
                raise Refused(400, "invalid_request_error", "request body must be a JSON object")
            if counting:
                endpoint.count_calls += 1
                return await self._exchange(endpoint, request, body, parsed, None)
            reservation, body = await self._reserve(endpoint, request, parsed, body)
            return await self._exchange(endpoint, request, body, parsed, reservation)

    async def _reserve(
        self, endpoint: AgentEndpoint, request: BaseRequest, parsed: dict[str, Any], body: bytes
    ) -> tuple[Reservation, bytes]:
        """Reserve the request's input plus its ``max_tokens`` (capped to what is left)."""
        budget = endpoint.budget
        if budget.limit is None:
            return Reservation(0, 0), body
        max_tokens = parsed.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise Refused(400, "invalid_request_error", "max_tokens must be a positive integer")
        bound = input_bound(parsed, len(body))
        if bound is not None and budget.fits_now(bound + max_tokens):
            input_tokens = bound  # plenty of room: the cheap bound will do
        else:  # near the end of the budget, or content whose size does not bound its tokens
            counted = await self._count_input(endpoint, request, parsed)
            input_tokens = counted if counted is not None else len(body) + FRAME_TOKENS
        try:
            reservation = await budget.reserve(input_tokens, max_tokens, wait_s=self.wait_s)
        except LookupError:
            raise budget_refusal(
                endpoint.agent_id,
                budget,
                f"this request's ~{input_tokens} input tokens leave no room for an answer",
            ) from None
        except TimeoutError:
            raise Refused(
                429,
                "rate_limit_error",
                f"agent {endpoint.agent_id}'s requests in flight hold the rest of its token "
                f"budget; waited {self.wait_s:g}s",
                retry_after=1.0,
            ) from None
        if reservation.output_tokens < max_tokens:
            why = cap_max_tokens(parsed, reservation.output_tokens)
            if why is not None:
                budget.settle(reservation, 0)
                raise budget_refusal(endpoint.agent_id, budget, why)
            log.info(
                "gateway: agent %s max_tokens capped from %d to %d by its token budget",
                endpoint.agent_id,
                max_tokens,
                reservation.output_tokens,
            )
            body = json.dumps(parsed).encode()
        return reservation, body

    def _upstream_headers(self, request: BaseRequest) -> dict[str, str]:
        headers = {
            k: v for k in FORWARD_REQUEST_HEADERS if (v := request.headers.get(k)) is not None
        }
        headers["accept-encoding"] = "identity"
        if self._api_key:
            if self._auth_header == "bearer":
                headers["authorization"] = f"Bearer {self._api_key}"
            else:
                headers["x-api-key"] = self._api_key
        return headers

    async def _count_input(
        self, endpoint: AgentEndpoint, request: BaseRequest, parsed: dict[str, Any]
    ) -> int | None:
        """The upstream's count of the request's input tokens; None when it cannot tell.

        A rate-limited count holds every agent like any request, and is asked again after."""
        headers = {**self._upstream_headers(request), "content-type": "application/json"}
        headers.pop("accept", None)
        try:
            while await self.limits.wait(endpoint.deadline):
                async with self._client().post(
                    self.upstream + "/v1/messages/count_tokens",
                    json=count_request(parsed),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=COUNT_TIMEOUT_S),
                ) as upstream:
                    if upstream.status == 200:
                        self.limits.clear()
                        data: Any = await upstream.json(content_type=None)
                        break
                    log.info("gateway: count_tokens upstream answered %s", upstream.status)
                    if upstream.status not in LIMIT_STATUSES or not await self._limited.refused(
                        endpoint.agent_id,
                        endpoint.deadline,
                        upstream.status,
                        upstream.headers,
                        await upstream.read(),
                        _response_headers(upstream),
                    ):
                        return None
            else:
                return None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("gateway: count_tokens upstream failed: %s", type(exc).__name__)
            return None
        value = data.get("input_tokens") if isinstance(data, dict) else None
        return value if isinstance(value, int) and value >= 0 else None

    async def _exchange(
        self,
        endpoint: AgentEndpoint,
        request: BaseRequest,
        body: bytes,
        parsed: dict[str, Any],
        reservation: Reservation | None,
    ) -> StreamResponse:
        """Forward to the upstream; a ``reservation`` (messages, not counts) is settled after."""
        url = (
            self.upstream
            + request.path
            + (f"?{request.query_string}" if request.query_string else "")
        )
        meter = UsageMeter()
        outcome: Outcome = "answered"
        response: StreamResponse | None = None
        try:
            while (
                refusal := await self._limited.clear(endpoint.agent_id, endpoint.deadline)
            ) is None:
                outcome = "aborted"
                upstream = await self._client().post(
                    url, data=body, headers=self._upstream_headers(request)
                )
                if upstream.status not in LIMIT_STATUSES:
                    self.limits.clear()
                    break
                async with upstream:
                    data = await upstream.read()
                outcome = "answered"
                out_headers = _response_headers(upstream)
                if not await self._limited.refused(
                    endpoint.agent_id,
                    endpoint.deadline,
                    upstream.status,
                    upstream.headers,
                    data,
                    out_headers,
                ):
                    return Response(status=upstream.status, body=data, headers=out_headers)
            else:
                return refusal
            async with upstream:  # the answer the loop stopped at
                out_headers = _response_headers(upstream)
                if upstream.content_type == "text/event-stream" and upstream.status == 200:
                    response = StreamResponse(status=upstream.status, headers=out_headers)
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        meter.feed(chunk)
                        await response.write(chunk)
                    outcome = "answered"
                    await response.write_eof()
                    return response
                data = await upstream.read()
                outcome = "answered"
                if upstream.status == 200:
                    meter.from_message(data)
                else:
                    log.info(
                        "gateway: upstream answered %s for agent %s",
                        upstream.status,
                        endpoint.agent_id,
                    )
                return Response(status=upstream.status, body=data, headers=out_headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not meter.seen:
                outcome = "unreachable"
            log.warning(
                "gateway: upstream unreachable for agent %s: %s",
                endpoint.agent_id,
                type(exc).__name__,
            )
            if response is not None:  # the stream has begun: it just ends here
                return response
            return error_response(
                502,
                "api_error",
                f"the model gateway cannot reach the model upstream ({type(exc).__name__})",
            )
        finally:
            if reservation is not None:
                await self._settle(
                    endpoint, str(parsed.get("model", "")), meter, reservation, outcome
                )

    async def _settle(
        self,
        endpoint: AgentEndpoint,
        model: str,
        meter: UsageMeter,
        reservation: Reservation,
        outcome: Outcome,
    ) -> None:
        """Release the reservation and record the usage.

        A response that gave its final usage counts that. One that gave none (an error answer, an
        unreachable upstream) counts nothing. One cut off before its final usage (the agent hung
        up, the stream broke) counts its whole reservation: the upstream may have spent it.
        """
        if meter.final:
            input_tokens, output_tokens = meter.input_tokens, meter.output_tokens
        elif outcome != "aborted" and not meter.seen:
            input_tokens = output_tokens = 0
        else:
            input_tokens = meter.input_tokens if meter.seen else reservation.input_tokens
            output_tokens = max(meter.output_tokens, reservation.output_tokens)
            log.info(
                "gateway: agent %s's response ended before its usage; counted %d tokens",
                endpoint.agent_id,
                input_tokens + output_tokens,
            )
        endpoint.budget.settle(reservation, input_tokens + output_tokens)
        if input_tokens + output_tokens == 0 and not meter.seen:
            return
        delta = Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self.prices.cost(model, input_tokens, output_tokens),
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


async def _read_body(request: BaseRequest) -> bytes:
    """The whole body (it arrives in chunks: ``read(n)`` gives only what is there), at most
    ``MAX_BODY_BYTES``; a bigger one is refused without reading it all."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, "request_too_large", f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    headers = {k: upstream.headers[k] for k in FORWARD_RESPONSE_HEADERS if k in upstream.headers}
    for key, value in upstream.headers.items():
        if key.lower().startswith("anthropic-"):
            headers[key] = value
    if "content-encoding" in upstream.headers:
        headers["content-encoding"] = upstream.headers["content-encoding"]
    return headers
