"""The ``Sandbox`` protocol the spawner uses, and the data it passes across the seam.

``sandbox/`` imports nothing from ``core/``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SandboxError(Exception):
    """A sandbox could not be created, started or cleaned up. The message is user-readable."""


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and under which policy.

    ``argv`` runs with ``workdir`` (the agent's worktree) as its current directory; the worktree
    is the only writable host path besides ``rw_binds``. ``env`` is the complete environment of
    the process (callers build it from an allowlist; backends add nothing secret) except that,
    without a ``HOME`` in it, the backend sets ``HOME`` to the sandbox's own home directory.
    """

    agent_id: str
    argv: list[str]
    workdir: Path
    env: dict[str, str]
    log_dir: Path
    """Host directory receiving ``stdout.log`` and ``stderr.log`` of the process."""
    memory_mb: int = 256
    cpu_quota: float | None = 1.0
    """CPU cores the sandbox may use (cgroup quota); None means unlimited."""
    pids_max: int = 256
    ro_binds: tuple[Path, ...] = ()
    """Extra host paths visible read-only at the same path (e.g. a runtime's package dir)."""
    rw_binds: tuple[Path, ...] = ()
    """Extra host paths visible read-write at the same path (e.g. the model gateway socket dir)."""
    readonly_paths: tuple[Path, ...] = ()
    """Paths inside the worktree re-bound read-only over the writable worktree (git metadata)."""
    hidden_paths: tuple[Path, ...] = ()
    """Host paths that must be invisible inside (state dir, config, home...)."""
    overlays: tuple[tuple[Path, Path], ...] = ()
    """``(host file, path inside the worktree)``: the host file is bound read-only over that path
    (e.g. a gate script's base version over the agent's edited copy)."""
    network: bool = False
    tmp_mb: int = 512
    """Size of the sandbox's private ``/tmp`` and ``$HOME`` (tmpfs; part of the disk budget)."""


@dataclass(frozen=True)
class SandboxStats:
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    pids: int = 0
    oom_killed: bool = False


@dataclass
class SandboxHealth:
    backend: str
    ok: bool
    degraded: list[str] = field(default_factory=list)
    detail: str = ""


class SandboxProcess(Protocol):
    """A started sandbox. Every method is safe to call after the process has ended."""

    agent_id: str

    @property
    def pid(self) -> int | None: ...

    @property
    def handle(self) -> dict[str, str]:
        """What reconciliation needs to find this sandbox again (cgroup path, container id...)."""
        ...

    async def wait(self) -> int:
        """Wait for the main process to exit; its exit code (negative: killed by that signal)."""
        ...

    def signal(self, sig: signal.Signals) -> None: ...

    async def kill(self, grace_s: float = 5.0) -> None:
        """TERM everything in the sandbox, then KILL whatever is left after ``grace_s``."""
        ...

    async def stats(self) -> SandboxStats: ...

    async def cleanup(self) -> None:
        """Kill anything left and release every resource (cgroup, container, temp dirs)."""
        ...


class Sandbox(Protocol):
    name: str

    async def start(self, spec: SandboxSpec) -> SandboxProcess: ...

    async def health(self) -> SandboxHealth: ...

    async def reap_orphans(self, live_agent_ids: set[str]) -> list[str]:
        """Remove leftovers (cgroups, containers, processes) of agents not in ``live_agent_ids``.

        Returns the agent ids whose leftovers were removed. Called at start-up.
        """
        ...
