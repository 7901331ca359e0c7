"""What a runtime hands the spawner: a sandbox spec, and how to read the session's outcome.

``SandboxPolicy`` is the part of a sandbox spec that does not depend on the runtime (limits, what
is read-only or hidden, the toolchains every sandbox sees); a runtime adds its argv, environment
and its own binds. The gates of an attempt run under the same policy as its agent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.models import AgentState, SpawnRequest, Usage
from core.settings import Settings
from sandbox import SandboxSpec

ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM")


@dataclass
class LaunchOutcome:
    """What the agent's last stdout line told us."""

    summary: str | None
    verdict: dict[str, Any] | None = None
    usage: Usage | None = None
    error: str | None = None
    """Why the session failed, as the runtime reported it (e.g. a budget)."""


ActivitySink = Callable[[str, str], Awaitable[None]]
"""``(tool, summary) -> None``: reports one tool call of a running session."""
SessionSink = Callable[[str], Awaitable[None]]
"""``(session_id) -> None``: reports the session id a runtime can resume."""


@dataclass(eq=False)
class Launch:
    """One started session: its sandbox spec and how to read what it did."""

    spec: SandboxSpec
    extra: dict[str, Any] = field(default_factory=dict)
    _collected: bool = field(default=False, init=False, repr=False)

    def outcome(self, last_stdout_line: str | None) -> LaunchOutcome:
        return LaunchOutcome(summary=last_stdout_line)

    async def follow(
        self, activity: ActivitySink, session: SessionSink, ended: asyncio.Event
    ) -> None:
        """While the session runs: report its tool calls and session id (default: nothing).
        Once ``ended`` is set, report what is left and return (or be cancelled soon after)."""

    async def collect(self) -> None:
        """Keep the session's artefacts (e.g. the transcript) with the agent's logs, once: the
        finish stage collects before the final state is written, the cleanup after a kill."""
        if not self._collected:
            self._collected = True
            await self._collect()

    async def _collect(self) -> None:
        """What ``collect`` does; runtimes with artefacts override it."""


@dataclass(frozen=True)
class SandboxPolicy:
    """The parts of a sandbox spec that do not depend on the launcher."""

    memory_mb: int
    cpu_quota: float | None
    pids_max: int
    tmp_mb: int
    readonly_paths: tuple[Path, ...]
    hidden_paths: tuple[Path, ...]
    toolchains: tuple[Path, ...] = ()
    """The operator's toolchains (``sandbox/toolchains.py``), read-only in every sandbox."""

    def spec(
        self,
        agent_id: str,
        argv: list[str],
        *,
        worktree: Path,
        env: dict[str, str],
        log_dir: Path,
        ro_binds: tuple[Path, ...] = (),
        rw_binds: tuple[Path, ...] = (),
    ) -> SandboxSpec:
        return SandboxSpec(
            agent_id=agent_id,
            argv=argv,
            workdir=worktree,
            env=env,
            log_dir=log_dir,
            memory_mb=self.memory_mb,
            cpu_quota=self.cpu_quota,
            pids_max=self.pids_max,
            tmp_mb=self.tmp_mb,
            ro_binds=tuple(dict.fromkeys((*self.toolchains, *ro_binds))),
            rw_binds=rw_binds,
            readonly_paths=self.readonly_paths,
            hidden_paths=self.hidden_paths,
        )

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        readonly: list[Path],
        hidden: list[Path],
        toolchains: tuple[Path, ...] = (),
    ) -> SandboxPolicy:
        return cls(
            memory_mb=settings.sandbox_default_memory_mb,
            cpu_quota=settings.sandbox_cpu_quota,
            pids_max=settings.sandbox_pids_max,
            tmp_mb=settings.sandbox_disk_mb,
            readonly_paths=tuple(readonly),
            hidden_paths=tuple(hidden),
            toolchains=toolchains,
        )


def base_env() -> dict[str, str]:
    """The sandbox environment: an allowlist of the host's, never a secret."""
    env = {k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["TMPDIR"] = "/tmp"  # HOME is the sandbox's own (a private home; the worktree without one)
    return env


def agent_env(agent: AgentState, request: SpawnRequest, worktree: Path) -> dict[str, str]:
    env = base_env()
    env.update(
        {
            "MOSAIC_AGENT_ID": agent.agent_id,
            "MOSAIC_TASK_ID": agent.task_id,
            "MOSAIC_AGENT_TYPE": agent.agent_type.value,
            "MOSAIC_WORK_ITEMS": ",".join(request.context.work_items),
            "MOSAIC_INSTRUCTIONS": request.context.instructions or "",
        }
    )
    return env
