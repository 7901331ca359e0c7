"""Bounded host resources (SPEC §16): an agent's logs are capped keeping their tail, and an agent
storing more than its disk budget (worktree growth plus its sandbox's tmpfs) fails."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import OrchestratorFactory


async def test_agent_over_its_disk_budget_fails(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    hog = "head -c 40M /dev/zero > big.bin; echo wrote; sleep 30"
    async with orchestrator_factory(mosaic_agent_command=hog, sandbox_disk_mb=16) as orch:
        agent_id = await orch.spawn("T-disk", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=30)
    assert data["status"] == "failed", data
    assert data["error"].startswith("sandbox: disk budget of 16 MB exceeded"), data
    assert "exceeded (4" in data["error"]  # "(40 MB used)", give or take the walk's timing


async def test_agent_within_its_disk_budget_completes(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    command = "head -c 4M /dev/zero > small.bin; sleep 5; echo stored-4mb"
    async with orchestrator_factory(mosaic_agent_command=command, sandbox_disk_mb=16) as orch:
        agent_id = await orch.spawn("T-disk-ok", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=30)
    assert data["status"] == "completed", data
    assert data["resources"]["disk_bytes"] >= 4 * 1024 * 1024


async def test_sandbox_tmp_counts_against_the_disk_budget(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    # 10 MB in /tmp and 10 MB in the worktree: each under the 16 MB budget, together over it
    hog = "head -c 10M /dev/zero > /tmp/a.bin && head -c 10M /dev/zero > b.bin; sleep 30"
    async with orchestrator_factory(
        mosaic_agent_command=hog,
        sandbox_backend="bwrap",
        sandbox_disk_mb=16,
        sandbox_cgroup_parent=f"mosaic-test-{uuid.uuid4().hex[:8]}",
    ) as orch:
        agent_id = await orch.spawn("T-tmp", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=60)
    assert data["status"] == "failed", data
    assert data["error"].startswith("sandbox: disk budget of 16 MB exceeded"), data


async def test_agent_log_is_capped_and_keeps_its_tail(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    chatty = "seq 1 500000; sleep 2.5; echo finished-after-chatter"  # ~3.4 MB of output
    async with orchestrator_factory(mosaic_agent_command=chatty, agent_log_mb=1) as orch:
        agent_id = await orch.spawn("T-chatty", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=30)
        log = orch.settings.mosaic_state_dir / "agents" / agent_id / "stdout.log"
        text = log.read_text()
    assert data["status"] == "completed", data
    assert data["summary"] == "finished-after-chatter"
    assert log.stat().st_size <= 1024 * 1024
    lines = text.splitlines()
    assert lines[0].startswith("[mosaic: ") and "dropped (log cap)" in lines[0]
    assert lines[-2:] == ["500000", "finished-after-chatter"]
