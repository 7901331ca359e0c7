"""The monitor: follows one live agent's resources, output and budgets (SPEC §13).

Every ``interval`` it reads the sandbox's cgroup stats and the last output line into the agent's
state; an agent past its wall-time budget, or silent for longer than the stuck timeout, is ended
and fails with that reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from core.lifecycle import Lifecycle
from core.logtail import last_line
from core.models import AgentState
from core.settings import Settings
from sandbox import SandboxProcess

log = logging.getLogger(__name__)


class _Run(Protocol):
    failure: str | None


class Monitor:
    def __init__(
        self, settings: Settings, lifecycle: Lifecycle, agent_dir: Path, *, interval: float = 1.0
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.agent_dir = agent_dir
        self.interval = interval

    def _last_output(self) -> str | None:
        return last_line(self.agent_dir / "stdout.log") or last_line(self.agent_dir / "stderr.log")

    async def watch(self, agent_id: str, process: SandboxProcess, run: _Run) -> None:
        started = time.monotonic()
        budget = self.settings.agent_max_wall_s
        stuck_after = self.settings.agent_stuck_s
        last: dict[str, Any] = {}
        last_activity: tuple[str | None, float] | None = None
        active_at = started
        while True:
            await asyncio.sleep(self.interval)
            stats = await process.stats()
            output = await asyncio.to_thread(self._last_output)
            runtime = time.monotonic() - started
            current = {
                "resources": {
                    "cpu_seconds": round(stats.cpu_seconds, 2),
                    "memory_bytes": float(stats.memory_bytes),
                    "pids": float(stats.pids),
                    "runtime_s": round(runtime, 1),
                },
                "last_output": output,
            }
            if current != last:
                last = current
                try:
                    await self.lifecycle.update(agent_id, _constant(current))
                except Exception as exc:  # state gone (killed and expired): stop watching
                    log.debug("monitor stops: %s", exc, extra={"agent_id": agent_id})
                    return
            activity = (output, round(stats.cpu_seconds, 1))
            if activity != last_activity:
                last_activity, active_at = activity, time.monotonic()
            idle = time.monotonic() - active_at
            if runtime > budget:
                run.failure = f"budget: wall time of {budget:g}s exceeded"
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
