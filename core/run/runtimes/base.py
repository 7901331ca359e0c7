"""The runtime seam: how an agent's session runs inside its sandbox (SPEC §15).

A runtime turns an agent into a ``Launch`` (a sandbox spec, its activity, its outcome). The spawner
never asks which runtime it holds. ``Runtimes`` is the set the engine built: the configured default
(``MOSAIC_RUNTIME``) and, for each name, either a runtime or why it is not available, so that a
spawn asking for a missing one is refused before anything is created.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Protocol

from core.agents import AgentEndpoint, ModelGateway
from core.errors import NotReady
from core.models import RUNTIME_NAMES, AgentState, SpawnRequest
from core.run.iodir import attempt_name, fresh_io_dir
from core.run.launch import Launch, SandboxPolicy
from core.settings import Settings


class Runtime(Protocol):
    name: str

    async def prepare(
        self,
        agent: AgentState,
        request: SpawnRequest,
        *,
        worktree: Path,
        agent_dir: Path,
        policy: SandboxPolicy,
        stack: contextlib.AsyncExitStack,
    ) -> Launch:
        """Everything the session needs (I/O dir, gateway endpoint, config), registered on
        ``stack`` for cleanup, and the launch to start."""
        ...

    def forget(self, agent_id: str) -> None:
        """The agent ended for good (no attempt follows): drop what its attempts shared."""
        ...


async def model_endpoint(
    gateway: ModelGateway,
    settings: Settings,
    agent: AgentState,
    stack: contextlib.AsyncExitStack,
) -> tuple[Path, AgentEndpoint]:
    """The attempt's fresh I/O dir and the agent's gateway socket in it (its token budget and
    wall-time deadline), both gone when ``stack`` closes."""
    io_dir = await fresh_io_dir(attempt_name(agent), stack)
    endpoint = await stack.enter_async_context(
        gateway.serve_agent(
            agent.agent_id,
            io_dir,
            settings.agent_max_tokens,
            deadline=time.monotonic() + settings.agent_max_wall_s,
        )
    )
    return io_dir, endpoint


class Runtimes:
    """The runtimes of one engine: each name maps to a runtime or to what is missing."""

    def __init__(
        self, default: str, available: dict[str, Runtime], missing: dict[str, str]
    ) -> None:
        unknown = (set(available) | set(missing)) - set(RUNTIME_NAMES)
        if unknown:
            raise ValueError(f"unknown runtime(s): {', '.join(sorted(unknown))}")
        self.default = default
        self._available = available
        self._missing = missing

    def available(self) -> list[str]:
        return sorted(self._available)

    def name_for(self, requested: str | None) -> str:
        return requested or self.default

    def problem(self, requested: str | None = None) -> str | None:
        """Why the runtime a spawn asks for (default: the configured one) cannot run, or None."""
        name = self.name_for(requested)
        if name in self._available:
            return None
        return self._missing.get(name, f"runtime {name!r} is not configured")

    def check(self, requested: str | None) -> str:
        """The runtime's name; ``NotReady`` (503) naming what is missing when it cannot run."""
        problem = self.problem(requested)
        if problem:
            raise NotReady(f"runtime {self.name_for(requested)!r} is not available: {problem}")
        return self.name_for(requested)

    def get(self, name: str | None) -> Runtime:
        return self._available[self.check(name)]
