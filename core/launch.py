"""How an agent process is launched: the external agent command (SPEC §8).

A launcher turns an agent into a ``SandboxSpec`` plus a parser for its final stdout line. The
built-in Claude runtime lives in ``core/agents/launcher.py`` behind the same interface.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


@dataclass
class Launch:
    spec: SandboxSpec
    extra: dict[str, Any] = field(default_factory=dict)

    def outcome(self, last_stdout_line: str | None) -> LaunchOutcome:
        return LaunchOutcome(summary=last_stdout_line)

    async def collect(self) -> None:
        """Keep the session's artefacts (e.g. the transcript) with the agent's logs."""


class AgentLauncher(Protocol):
    async def prepare(
        self,
        agent: AgentState,
        request: SpawnRequest,
        *,
        worktree: Path,
        agent_dir: Path,
        policy: SandboxPolicy,
        stack: contextlib.AsyncExitStack,
    ) -> Launch: ...


@dataclass(frozen=True)
class SandboxPolicy:
    """The parts of a sandbox spec that do not depend on the launcher."""

    memory_mb: int
    cpu_quota: float | None
    pids_max: int
    tmp_mb: int
    readonly_paths: tuple[Path, ...]
    hidden_paths: tuple[Path, ...]

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
            ro_binds=ro_binds,
            rw_binds=rw_binds,
            readonly_paths=self.readonly_paths,
            hidden_paths=self.hidden_paths,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, readonly: list[Path], hidden: list[Path]
    ) -> SandboxPolicy:
        return cls(
            memory_mb=settings.sandbox_default_memory_mb,
            cpu_quota=settings.sandbox_cpu_quota,
            pids_max=settings.sandbox_pids_max,
            tmp_mb=settings.sandbox_disk_mb,
            readonly_paths=tuple(readonly),
            hidden_paths=tuple(hidden),
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


class ExternalCommandLauncher:
    """``MOSAIC_AGENT_COMMAND`` run with ``sh -c`` in the worktree, inside the sandbox."""

    def __init__(self, command: str) -> None:
        self.command = command

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
        spec = policy.spec(
            agent.agent_id,
            ["/bin/sh", "-c", self.command],
            worktree=worktree,
            env=agent_env(agent, request, worktree),
            log_dir=agent_dir,
        )
        return Launch(spec)
