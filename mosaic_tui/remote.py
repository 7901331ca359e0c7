"""``RemoteEngine``: the ``EngineAPI`` over the orchestrator's REST/SSE API (attach mode).

Errors in the API's ``{error: {code, message}}`` bodies come back as the ``core.errors`` class
for that code, with the server's message; an unreachable server is ``NotReady`` naming the URL.
The event stream reconnects with ``Last-Event-ID`` so a dropped connection loses nothing.
Closing the dashboard only closes this client: the agents keep running on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import ValidationError

from core.engine_api import KillAllResult, QueueStats, SpawnResponse
from core.errors import (
    Conflict,
    IllegalTransition,
    NotFound,
    NotReady,
    OrchestratorError,
    ValidationFailed,
)
from core.git.errors import InvalidBranch, InvalidRepository
from core.models import (
    AgentList,
    AgentState,
    AgentStatus,
    AgentView,
    ErrorBody,
    Event,
    Readiness,
    SpawnRequest,
)

log = logging.getLogger(__name__)

ERRORS: dict[str, type[OrchestratorError]] = {
    "invalid_request": ValidationFailed,
    "invalid_repository": InvalidRepository,
    "invalid_branch": InvalidBranch,
    # the API answers 404 for a well-formed local path that is no git repository; the engine
    # in-process raises InvalidRepository for it: the dashboard sees the same in both modes
    "repository_not_found": InvalidRepository,
    "body_too_large": ValidationFailed,
    "not_found": NotFound,
    "conflict": Conflict,
    "illegal_transition": IllegalTransition,
    "not_ready": NotReady,
}

BY_STATUS: dict[int, type[OrchestratorError]] = {
    400: ValidationFailed,
    404: NotFound,
    409: Conflict,
    413: ValidationFailed,
    415: ValidationFailed,
    503: NotReady,
}


class Unauthorized(OrchestratorError):
    code = "unauthorized"


class Forbidden(OrchestratorError):
    """The server refused this client's Host or Origin (its message names the setting)."""

    code = "forbidden"


class RemoteEngine:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry_s: float = 0.5,
        max_retry_s: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RemoteEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            headers: dict[str, str] = {}  # the server names the principal itself (audit records)
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._http = aiohttp.ClientSession(headers=headers)
        return self._http

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self.http.request(
                method, self.url + path, json=body, timeout=timeout
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NotReady(f"cannot reach the orchestrator at {self.url}: {exc}") from None
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = None
        if status >= 400:
            raise self._error(status, data, text)
        return data

    def _error(self, status: int, data: Any, text: str) -> OrchestratorError:
        try:
            err = ErrorBody.model_validate(data).error
        except ValidationError:
            return OrchestratorError(f"HTTP {status} from {self.url}: {text[:200]}")
        message = err.message or f"HTTP {status}"
        if status == 401:
            return Unauthorized(message, details=err.details)
        if status == 403:
            return Forbidden(message, details=err.details)
        cls = ERRORS.get(err.code) or BY_STATUS.get(status, OrchestratorError)
        return cls(message, details=err.details)

    # -- EngineAPI -----------------------------------------------------------------------------
    async def spawn(self, request: SpawnRequest) -> SpawnResponse:
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        return SpawnResponse.model_validate(await self._call("POST", "/agents/spawn", body))

    async def status(self, agent_id: str) -> AgentState:
        data = await self._call("GET", f"/agents/{quote(agent_id, safe='')}/status")
        return AgentView.model_validate(data).state()

    async def list_agents(self, status: AgentStatus | None = None) -> list[AgentState]:
        query = f"?status={status.value}" if status is not None else ""
        data = await self._call("GET", f"/agents{query}")
        return [view.state() for view in AgentList.model_validate(data).agents]

    async def kill(self, agent_id: str, *, who: str = "api") -> AgentState:
        data = await self._call("POST", f"/agents/{quote(agent_id, safe='')}/kill")
        return AgentView.model_validate(data).state()

    async def kill_all(self, *, who: str = "api") -> KillAllResult:
        return KillAllResult.model_validate(await self._call("POST", "/agents/kill-all"))

    async def pause(self) -> None:
        await self._call("POST", "/queue/pause")

    async def resume(self) -> None:
        await self._call("POST", "/queue/resume")

    async def queue_stats(self) -> QueueStats:
        return QueueStats.model_validate(await self._call("GET", "/queue/stats"))

    async def diff(self, agent_id: str) -> str:
        """``GET /agents/{id}/diff`` (text/plain); 404 is ``NotFound`` with the server's message."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        url = f"{self.url}/agents/{quote(agent_id, safe='')}/diff"
        try:
            async with self.http.get(url, timeout=timeout) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise NotReady(f"cannot reach the orchestrator at {self.url}: {exc}") from None
        if status >= 400:
            try:
                data = json.loads(text) if text else None
            except json.JSONDecodeError:
                data = None
            raise self._error(status, data, text)
        return text

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        try:
            data = await self._call("GET", "/health/ready")
        except OrchestratorError as exc:
            return False, {"server": {"ok": False, "error": exc.message}}
        checks = Readiness.model_validate(data).checks
        return True, {name: check.model_dump() for name, check in checks.items()}

    async def events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """SSE events after ``last_event_id``; reconnects (with ``Last-Event-ID``) until closed."""
        last = last_event_id
        delay = self.retry_s
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=60)
            try:
                async with self.http.get(
                    self.url + "/agents/events", headers=headers, timeout=timeout
                ) as resp:
                    if resp.status >= 400:
                        text = await resp.text()
                        with contextlib.suppress(json.JSONDecodeError):
                            raise self._error(resp.status, json.loads(text), text)
                        raise self._error(resp.status, None, text)
                    delay = self.retry_s
                    async for event in _sse_events(resp.content):
                        if event.id:
                            last = event.id
                        yield event
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("event stream from %s dropped: %r", self.url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_s)


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[Event]:
    data: list[str] = []
    event_id = ""
    async for raw in content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                event = Event.model_validate_json("\n".join(data))
                if event_id and not event.id:
                    event.id = event_id
                yield event
            data, event_id = [], ""
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value


async def run_attached(url: str, token: str | None = None, *, desktop_notify: bool = False) -> None:
    """The dashboard as a client of a running orchestrator; quitting only detaches."""
    from mosaic_tui.app import MosaicApp

    async with RemoteEngine(url, token) as engine:
        await engine.queue_stats()  # fails fast, with one clear line, if unreachable or refused
        app = MosaicApp(
            engine,
            local=False,
            api_url=engine.url,
            desktop_notify=desktop_notify,
            settle_heap=True,
        )
        await app.run_async()
