"""Agents spawned through the API run under bwrap with cgroup limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.instance import sandbox_scope
from tests.spine.conftest import OrchestratorFactory


async def test_memory_hog_is_killed_at_its_limit_and_the_agent_fails(
    orchestrator_factory: OrchestratorFactory, origin: Path, cgroup: str
) -> None:
    # bounded: tail holds at most 300 MB (one line with no newline), the cgroup allows 64 MB
    hog = "head -c 300M /dev/zero | tail -n 1 > /dev/null; echo survived"
    async with orchestrator_factory(
        mosaic_agent_command=hog,
        sandbox_backend="bwrap",
        sandbox_default_memory_mb=64,
        sandbox_cgroup_parent=cgroup,
    ) as orch:
        agent_id = await orch.spawn("T-hog", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=60)
    assert data["status"] == "failed", data
    assert data["error"] == "sandbox: memory limit (64 MB) exceeded"


async def test_agent_runs_in_its_own_pid_namespace_and_cgroup(
    orchestrator_factory: OrchestratorFactory, origin: Path, cgroup: str
) -> None:
    async with orchestrator_factory(
        mosaic_agent_command="echo pid=$$; sleep 5",
        sandbox_backend="bwrap",
        sandbox_cgroup_parent=cgroup,
        sandbox_pids_max=40,
    ) as orch:
        agent_id = await orch.spawn("T-ns", origin)
        await orch.wait_status(agent_id, "running")
        scope = sandbox_scope(orch.settings, orch.engine.instance)  # <cgroup>/<instance slug>
        assert scope.startswith(f"{cgroup}/i-")
        pids = Path(f"/sys/fs/cgroup/pids/{scope}/{agent_id}")
        assert pids.joinpath("pids.max").read_text().strip() == "40"
        procs: list[str] = []
        for _ in range(100):  # the launcher enters the cgroup a moment after it is spawned
            procs = pids.joinpath("cgroup.procs").read_text().split()
            if procs:
                break
            await asyncio.sleep(0.02)
        assert procs  # the agent is inside its cgroup
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
    assert data["status"] == "completed", data
    assert int(data["summary"].removeprefix("pid=")) < 10  # a fresh PID namespace
    assert not pids.exists()  # the cgroup is removed with the agent
