"""``GET /agents/{agentId}/diff`` of agents confined by bwrap (SPEC §17): what a sandboxed agent
left behind, failed or killed, live, with secrets masked. The files are the sandbox user's; the
orchestrator reads them only through git (no hooks, no textconv)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.spine.conftest import OrchestratorFactory
from tests.spine.test_diff import MASKED, TOKEN, diff, until_cleaned_up, until_file

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="agents run as the sandbox user: needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
]


async def test_live_failed_and_killed_sandboxed_agents(
    orchestrator_factory: OrchestratorFactory, origin: Path, cgroup: str
) -> None:
    failing = f"echo 'aws = \"{TOKEN}\"' > leak.cfg; mkdir -p d; echo deep > d/f.txt; exit 2"
    lingering = "echo partial > wip.txt; touch started; sleep 300"
    async with orchestrator_factory(
        mosaic_agent_command=f'if [ "$MOSAIC_TASK_ID" = T-bw-fail ]; then {failing}; '
        f"else {lingering}; fi",
        sandbox_backend="bwrap",
        sandbox_cgroup_parent=cgroup,
    ) as orch:
        failed = await orch.spawn("T-bw-fail", origin)
        live = await orch.spawn("T-bw-live", origin)
        await orch.wait_status(failed, "failed", timeout=60)
        await until_cleaned_up(orch, failed)
        status, _, text = await diff(orch, failed)
        assert status == 200, text
        assert "+++ b/leak.cfg" in text and TOKEN not in text and MASKED in text
        assert "+++ b/d/f.txt" in text and "+deep" in text

        await orch.wait_status(live, "running", timeout=60)
        await until_file(orch, live, "started")
        status, _, text = await diff(orch, live)
        assert status == 200 and "+++ b/wip.txt" in text and "+partial" in text, text

        code, _ = await orch.post(f"/agents/{live}/kill")
        assert code == 200
        await until_cleaned_up(orch, live)
        status, _, kept = await diff(orch, live)
        assert status == 200 and "+++ b/wip.txt" in kept, kept  # now from refs/mosaic/kept
