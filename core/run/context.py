"""One attempt of one agent: the run context every stage of the pipeline reads and fills.

The spawner creates it when an attempt starts and drops it when the attempt has cleaned up. The
workspace stage sets ``workspace``, the launch stage ``launch`` and ``process``; the finish stage
records whether the branch reached the origin (``pushed``), which decides whether the workspace's
teardown keeps the work (``refs/mosaic/kept/<agentId>``). The killswitch reads ``process`` and the
events to stop an attempt and wait for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.models import AgentState, SpawnRequest

if TYPE_CHECKING:
    from core.run.egress import Egress
    from core.run.fence import RunLifecycle
    from core.run.launch import Launch
    from core.run.workspace import Workspace
    from sandbox import SandboxProcess


@dataclass(eq=False)
class RunContext:
    """A live attempt on this instance."""

    agent: AgentState
    request: SpawnRequest
    attempt: int
    max_attempts: int
    agent_dir: Path
    runtime: str = ""
    """The runtime's name (``builtin``, ``claude-code``, ``command``)."""
    workspace: Workspace | None = None
    launch: Launch | None = None
    process: SandboxProcess | None = None
    fence: int = 0
    """The attempt's fencing token (``core/run/fence.py``)."""
    lifecycle: RunLifecycle = field(init=False)
    """Every state write of the attempt goes through it (guarded by ``fence``); set when the
    attempt takes the agent over."""
    fenced: str | None = None
    """Why the attempt lost its agent; from then on it writes, commits and pushes nothing."""
    egress: Egress | None = None
    """The attempt's way through the egress proxy (None: no network)."""
    failure: str | None = None
    """Set by the monitor when it ends the agent (budget, disk, stuck): the agent fails with it."""
    kill_grace_s: float | None = None
    """The grace of a requested kill (TERM to KILL); None: ``KILL_GRACE_S``."""
    kill_requested: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the sandbox is killed and released (cgroup gone), or the run ended without one;
    the worktree may still be being removed."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the attempt has cleaned up entirely."""

    @property
    def agent_id(self) -> str:
        return self.agent.agent_id

    @property
    def task_id(self) -> str:
        return self.agent.task_id

    @property
    def pushed(self) -> bool:
        return self.workspace is not None and self.workspace.pushed
