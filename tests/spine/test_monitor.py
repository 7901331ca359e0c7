"""The monitor: resources and last output in the status, over-budget and stuck agents failed."""

from __future__ import annotations

from pathlib import Path

from tests.spine.conftest import OrchestratorFactory


async def test_status_shows_resources_runtime_and_last_output(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    command = "echo step-one; sleep 1.5; echo step-two; sleep 1.5"
    async with orchestrator_factory(mosaic_agent_command=command) as orch:
        agent_id = await orch.spawn("T-mon", origin)
        await orch.wait_status(agent_id, "running")
        seen = set()
        while True:
            _, data = await orch.get(f"/agents/{agent_id}/status")
            if data.get("lastOutput"):
                seen.add(data["lastOutput"])
            if data["status"] != "running":
                break
        assert {"step-one", "step-two"} <= seen
        assert data["resources"]["runtime_s"] >= 1


async def test_agent_over_its_wall_time_budget_fails(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command="sleep 60", agent_max_wall_s=1.5) as orch:
        agent_id = await orch.spawn("T-wall", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=30)
    assert data["status"] == "failed"
    assert data["error"] == "budget: wall time of 1.5s exceeded"


async def test_silent_idle_agent_is_failed_as_stuck(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command="sleep 60", agent_stuck_s=2) as orch:
        agent_id = await orch.spawn("T-stuck", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=30)
    assert data["status"] == "failed"
    assert data["error"].startswith("stuck: no output and no CPU activity")
