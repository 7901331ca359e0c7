"""The operations a user has, as one interface.

``core.engine.Engine`` implements it in-process; ``mosaic_tui.remote.RemoteEngine`` implements
it over the REST/SSE API. The API handlers and the dashboard only ever talk to this interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from pydantic import AliasChoices, BaseModel, Field

from core.models import AgentState, AgentStatus, Event, SpawnRequest


class SpawnResponse(BaseModel):
    agent_id: str = Field(validation_alias=AliasChoices("agentId", "agent_id"))
    status: AgentStatus
    existing: bool = False


class KillAllResult(BaseModel):
    message: str
    total: int
    killed: int
    failed: int
    errors: list[dict[str, Any]] = Field(default_factory=list)


class QueueStats(BaseModel):
    waiting: int = 0
    prioritized: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    paused: bool = False
    workers: int = 0
    concurrency: int = 1
    max_concurrent_agents: int = 2
    live_agents: int = 0


class EngineAPI(Protocol):
    async def spawn(self, request: SpawnRequest) -> SpawnResponse: ...

    async def status(self, agent_id: str) -> AgentState: ...

    async def list_agents(self, status: AgentStatus | None = None) -> list[AgentState]: ...

    async def kill(self, agent_id: str, *, who: str = "api") -> AgentState: ...

    async def kill_all(self, *, who: str = "api") -> KillAllResult: ...

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def queue_stats(self) -> QueueStats: ...

    async def ready(self) -> tuple[bool, dict[str, Any]]: ...

    def events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """Events after ``last_event_id`` (replayed from the stream), then live ones."""
        ...
