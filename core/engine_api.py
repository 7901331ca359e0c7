"""The operations a user has, as one interface.

``core.engine.Engine`` implements it in-process; ``mosaic_tui.remote.RemoteEngine`` implements
it over the REST/SSE API. The API handlers and the dashboard only ever talk to this interface.
Its answers are the wire models of ``core.models`` (re-exported here for the callers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from core.models import (
    AgentState,
    AgentStatus,
    Event,
    KillAllResult,
    QueueStats,
    SpawnRequest,
    SpawnResponse,
)

__all__ = ["EngineAPI", "KillAllResult", "QueueStats", "SpawnResponse"]


class EngineAPI(Protocol):
    async def spawn(self, request: SpawnRequest) -> SpawnResponse: ...

    async def status(self, agent_id: str) -> AgentState: ...

    async def diff(self, agent_id: str) -> str:
        """The agent's change as a unified diff, secrets masked (``NotFound``: none)."""
        ...

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
