"""The monitor: follows one live agent's resources, output and budgets (SPEC §13).

Every ``interval`` it reads the sandbox's cgroup stats and the last output line into the agent's
state, and caps the agent's log files at ``AGENT_LOG_MB`` (keeping their tail); an agent past its
wall-time budget, past its disk budget (``core/diskusage.py``), or silent for longer than the
stuck timeout, is ended and fails with that reason. File work runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from core.diskusage import DiskBudget
from core.git.secrets import mask_text
from core.logcap import cap_logs
from core.logtail import last_line
from core.models import AgentState
from core.run.fence import RunLifecycle
from core.settings import Settings
from sandbox import SandboxProcess

log = logging.getLogger(__name__)


class _Run(Protocol):
    failure: str | None


class Monitor:
    def __init__(
        self,
        settings: Settings,
        lifecycle: RunLifecycle,
        agent_dir: Path,
        *,
        interval: float = 1.0,
        disk: DiskBudget | None = None,
        held: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.agent_dir = agent_dir
        self.interval = interval
        self.disk = disk
        self.held = held
        """True while the model's shared rate limit holds the agent: waiting is not stuck."""

    def _last_output(self) -> str | None:
        line = last_line(self.agent_dir / "stdout.log") or last_line(self.agent_dir / "stderr.log")
        return mask_text(line) if line else line  # shown in the status: never a secret in clear

    def _files(self, pid: int | None) -> tuple[str | None, int]:
        """Blocking, once a tick: cap the logs; the last output line and the sandbox's /tmp."""
        cap_logs(self.agent_dir, self.settings.agent_log_mb)
        tmp = self.disk.tmp_used(pid) if self.disk is not None else 0
        return self._last_output(), tmp

    async def watch(self, agent_id: str, process: SandboxProcess, run: _Run) -> None:
        try:
            await self._watch(agent_id, process, run)
        finally:
            if self.disk is not None:
                self.disk.close()

    async def _watch(self, agent_id: str, process: SandboxProcess, run: _Run) -> None:
        started = time.monotonic()
        budget = self.settings.agent_max_wall_s
        stuck_after = self.settings.agent_stuck_s
        last: dict[str, Any] = {}
        last_activity: tuple[str | None, float] | None = None
        active_at = started
        if self.disk is not None:
            self.disk.poll()  # the first walk starts at once
        while True:
            await asyncio.sleep(self.interval)
            stats = await process.stats()
            output, tmp_bytes = await asyncio.to_thread(self._files, process.pid)
            disk_failure = None
            if self.disk is not None:
                self.disk.poll()
                disk_failure = self.disk.verdict(tmp_bytes)
            runtime = time.monotonic() - started
            resources = {
                "cpu_seconds": round(stats.cpu_seconds, 2),
                "memory_bytes": float(stats.memory_bytes),
                "pids": float(stats.pids),
                "runtime_s": round(runtime, 1),
            }
            if self.disk is not None:
                resources["disk_bytes"] = float(self.disk.stored + tmp_bytes)
            current = {"resources": resources, "last_output": output}
            if current != last:
                last = current
                try:
                    await self.lifecycle.update(agent_id, _constant(current))
                except Exception as exc:  # state gone (killed and expired): stop watching
                    log.debug("monitor stops: %s", exc, extra={"agent_id": agent_id})
                    return
            activity = (output, round(stats.cpu_seconds, 1))
            if self.held is not None and self.held():
                last_activity = None  # held by the model's rate limit: not stuck
            if activity != last_activity:
                last_activity, active_at = activity, time.monotonic()
            idle = time.monotonic() - active_at
            if runtime > budget:
                run.failure = f"budget: wall time of {budget:g}s exceeded"
            elif disk_failure:
                run.failure = disk_failure
            elif idle > stuck_after:
                run.failure = f"stuck: no output and no CPU activity for {idle:.0f}s"
            if run.failure:
                log.warning(run.failure, extra={"agent_id": agent_id})
                await process.kill(self.settings.kill_grace_s)
                return


def _constant(changes: dict[str, Any]) -> Callable[[AgentState], dict[str, Any]]:
    def mutate(agent: AgentState) -> dict[str, Any]:
        return changes

    return mutate
