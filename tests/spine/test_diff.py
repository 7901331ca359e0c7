"""``GET /agents/{agentId}/diff`` (SPEC §17): an agent's change as a masked unified diff.

Real engine and API on loopback, real git origins; the agents are shell commands.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from core.git.diff import DIFF_MAX_BYTES
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator, OrchestratorFactory

TOKEN = "ghp_" + "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"  # shaped like a GitHub token
MASKED = "ghp_****"


async def diff(orch: Orchestrator, agent_id: str) -> tuple[int, str, str]:
    async with orch.http.get(f"{orch.url}/agents/{agent_id}/diff") as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def until_file(orch: Orchestrator, agent_id: str, name: str) -> None:
    path = orch.engine.spawner.paths.worktree(agent_id) / name
    async with asyncio.timeout(30):
        while not path.exists():
            await asyncio.sleep(0.02)


async def until_cleaned_up(orch: Orchestrator, agent_id: str) -> None:
    worktree = orch.engine.spawner.paths.worktree(agent_id)
    async with asyncio.timeout(30):
        while worktree.exists() or agent_id in orch.engine.spawner.live:
            await asyncio.sleep(0.02)


async def test_a_live_agents_worktree_against_its_base_with_untracked_files_and_secrets_masked(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    work = (
        "echo more >> README.md; mkdir -p src; echo 'x = 1' > src/new.py; "
        f"echo 'token = \"{TOKEN}\"' > creds.txt; touch ready; sleep 300"
    )
    async with orchestrator_factory(mosaic_agent_command=work) as orch:
        agent_id = await orch.spawn("T-diff-live", origin)
        await orch.wait_status(agent_id, "running")
        await until_file(orch, agent_id, "ready")
        status, ctype, text = await diff(orch, agent_id)
        assert status == 200, text
        assert ctype == "text/plain; charset=utf-8"
        assert "diff --git a/README.md b/README.md" in text and "+more" in text
        assert "+++ b/src/new.py" in text and "+x = 1" in text  # untracked, shown as new
        assert "new file mode" in text
        assert TOKEN not in text and MASKED in text
        # the agent's own index is untouched: the untracked files are still untracked
        worktree = orch.engine.spawner.paths.worktree(agent_id)
        assert worktree.exists()
        await orch.post(f"/agents/{agent_id}/kill")


async def test_a_failed_agents_kept_work(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    work = f"echo draft > notes.md; echo 'key: {TOKEN}' > secret.yml; exit 3"
    async with orchestrator_factory(mosaic_agent_command=work) as orch:
        agent_id = await orch.spawn("T-diff-failed", origin)
        await orch.wait_status(agent_id, "failed")
        await until_cleaned_up(orch, agent_id)
        status, ctype, text = await diff(orch, agent_id)
        assert status == 200, text
        assert ctype.startswith("text/plain")
        assert "+++ b/notes.md" in text and "+draft" in text
        assert "+++ b/secret.yml" in text and TOKEN not in text and MASKED in text
        assert "README.md" not in text  # only the change, not the base


async def test_a_killed_agents_kept_work(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    work = "echo half-done > wip.txt; touch started; sleep 300"
    async with orchestrator_factory(mosaic_agent_command=work) as orch:
        agent_id = await orch.spawn("T-diff-killed", origin)
        await orch.wait_status(agent_id, "running")
        await until_file(orch, agent_id, "started")
        code, _ = await orch.post(f"/agents/{agent_id}/kill")
        assert code == 200
        await until_cleaned_up(orch, agent_id)
        status, _, text = await diff(orch, agent_id)
        assert status == 200, text
        assert "+++ b/wip.txt" in text and "+half-done" in text
        assert "diff --git a/started b/started\nnew file mode" in text  # empty: no hunk


async def test_a_pushed_agents_commit(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)  # no gate to run: the worker's change is pushed
    async with orchestrator_factory(mosaic_agent_command="echo done > done.txt") as orch:
        agent_id = await orch.spawn("T-diff-pushed", origin)
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
        assert data["status"] == "completed" and data["result"]["pushed"], data
        await until_cleaned_up(orch, agent_id)
        status, _, text = await diff(orch, agent_id)
        assert status == 200, text
        assert "+++ b/done.txt" in text and "+done" in text
        assert ".mosaic" not in text  # the base's own files are not the agent's change


async def test_404_for_an_unknown_agent_one_without_change_and_a_bad_id(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command="exit 4") as orch:
        status, body = await orch.get(f"/agents/{uuid.uuid4()}/diff")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body = await orch.get("/agents/not-an-id/diff")
        assert status == 404 and body["error"]["code"] == "not_found"
        agent_id = await orch.spawn("T-diff-idle", origin)
        await orch.wait_status(agent_id, "failed")
        await until_cleaned_up(orch, agent_id)
        status, body = await orch.get(f"/agents/{agent_id}/diff")
        assert status == 404, body
        assert body["error"]["code"] == "not_found" and "no change" in body["error"]["message"]


async def test_a_huge_change_is_cut_with_a_note(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    work = "seq 1 1500000 > big.txt; touch ready; sleep 300"  # ~10 MB of diff
    async with orchestrator_factory(mosaic_agent_command=work) as orch:
        agent_id = await orch.spawn("T-diff-big", origin)
        await orch.wait_status(agent_id, "running")
        await until_file(orch, agent_id, "ready")
        status, _, text = await diff(orch, agent_id)
        assert status == 200
        body, _, note = text.rpartition("\n[diff truncated")
        assert note and len(body.encode()) <= DIFF_MAX_BYTES
        assert body.endswith("\n")  # cut at a line boundary
        assert "+1\n+2\n" in body
        await orch.post(f"/agents/{agent_id}/kill")
