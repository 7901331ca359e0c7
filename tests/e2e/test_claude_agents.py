"""Claude agents through the HTTP API: worker, reviewer, budgets, and the key never in the box."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from core.agents import ScriptedModelServer
from tests.e2e.conftest import FAKE_KEY
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator


def _show(origin: Path, ref: str) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(origin), "show", ref], capture_output=True, text=True
    )
    return out.stdout if out.returncode == 0 else ""


async def test_worker_writes_commits_and_pushes(
    claude: Orchestrator, origin: Path, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    agent_id = await claude.spawn(
        "T-hello", origin, context={"instructions": "[script:worker-hello]", "workItems": ["US-1"]}
    )
    data = await claude.wait_status(agent_id, "completed", "failed", timeout=60)
    assert data["status"] == "completed", data
    assert data["summary"] == "Added hello.txt with a greeting and checked it."
    result = data["result"]
    assert result["pushed"] is True and result["commit"]
    assert _show(origin, "mosaic/worker/T-hello:hello.txt") == "Hello from Mosaic\n"
    message = _show(origin, "mosaic/worker/T-hello")
    assert "Added hello.txt" in message and f"Mosaic-Agent: {agent_id}" in message
    assert data["usage"]["output_tokens"] > 0 and data["usage"]["turns"] >= 1
    # the key reached the model only through the orchestrator's gateway
    assert scripted.requests
    for req in scripted.requests:
        auth = req.headers.get("Authorization", "") + req.headers.get("x-api-key", "")
        assert FAKE_KEY in auth
    transcript = claude.settings.mosaic_state_dir / "agents" / agent_id / "transcript.jsonl"
    assert transcript.exists() and "run_command" in transcript.read_text()


async def test_reviewer_returns_a_verdict_and_does_not_push(
    claude: Orchestrator, origin: Path
) -> None:
    agent_id = await claude.spawn(
        "T-review",
        origin,
        agentType="reviewer",
        gateProfile="minimal",
        context={"instructions": "[script:reviewer-approve]"},
    )
    data = await claude.wait_status(agent_id, "completed", "failed", timeout=60)
    assert data["status"] == "completed", data
    assert data["result"]["verdict"]["decision"] == "approve"
    assert data["result"]["pushed"] is False
    assert _show(origin, "mosaic/reviewer/T-review") == ""


async def test_runaway_session_ends_at_its_turn_budget(claude_factory, origin: Path) -> None:
    async with claude_factory(agent_max_turns=3) as orch:
        agent_id = await orch.spawn("T-run", origin, context={"instructions": "[script:runaway]"})
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
        assert data["status"] == "failed"
        assert data["error"].startswith("budget:") and "turn" in data["error"]


async def test_api_key_is_absent_from_the_sandbox(claude: Orchestrator, origin: Path) -> None:
    agent_id = await claude.spawn(
        "T-env", origin, context={"instructions": "[script:worker-hello]"}
    )
    await claude.wait_status(agent_id, "completed", "failed", timeout=60)
    agent_dir = claude.settings.mosaic_state_dir / "agents" / agent_id
    for name in ("stdout.log", "stderr.log", "transcript.jsonl"):
        path = agent_dir / name
        if path.exists():
            assert FAKE_KEY not in path.read_text()


async def test_a_probing_agent_finds_no_key_in_env_proc_or_files(
    claude: Orchestrator, origin: Path
) -> None:
    agent_id = await claude.spawn("T-probe", origin, context={"instructions": "[script:key-probe]"})
    data = await claude.wait_status(agent_id, "completed", "failed", timeout=120)
    assert data["status"] == "completed", data
    transcript = claude.settings.mosaic_state_dir / "agents" / agent_id / "transcript.jsonl"
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    [probe] = [r for r in records if r.get("type") == "tool_result"]
    stdout = json.loads(probe["output"])["stdout"]
    assert "PATH=" in stdout and "probe-done" in stdout  # the probe really ran
    assert FAKE_KEY not in stdout
    files = stdout.rsplit("files:", 1)[1].split("probe-done")[0].strip()
    assert files == ""  # grep found no file holding the key
