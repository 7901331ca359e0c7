"""The claude-code runtime for real (SPEC §15): the Claude Code CLI from npm runs in the real bwrap
sandbox as the unprivileged sandbox user, reaches the model only through the agent's gateway
(forwarded to a loopback port of the sandbox), and the scripted Messages-API server plays the
model with Claude Code's own tools (``Write``, ``Bash``, ``Read`` with absolute paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from core.agents import ScriptedModelServer
from core.agents.claude_code import find_claude
from tests.e2e.conftest import FAKE_KEY
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator

pytestmark = pytest.mark.skipif(
    find_claude(None) is None,
    reason="the Claude Code CLI is not installed (.ci/setup.d/30-claude-code.sh installs it)",
)
Factory = Callable[..., contextlib.AbstractAsyncContextManager[Orchestrator]]


@pytest_asyncio.fixture
async def cc(claude_factory: Factory) -> AsyncIterator[Orchestrator]:
    async with claude_factory(mosaic_runtime="claude-code", agent_max_wall_s=120) as orch:
        yield orch


def _show(origin: Path, ref: str) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(origin), "show", ref], capture_output=True, text=True
    )
    return out.stdout if out.returncode == 0 else ""


def _claude_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "exe", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            exe = proc.info.get("exe") or ""
            if "claude-code" in exe or proc.info.get("name") in ("claude", "claude.exe"):
                found.append(proc)
    return found


async def test_a_claude_code_worker_writes_runs_and_is_pushed(
    cc: Orchestrator, origin: Path, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    agent_id = await cc.spawn(
        "T-cc", origin, context={"instructions": "[script:claude-worker-hello]"}
    )
    data = await cc.wait_status(agent_id, "completed", "failed", timeout=120)
    assert data["status"] == "completed", data.get("error")
    assert data["runtime"] == "claude-code" and data["sessionId"]
    assert data["summary"] == "Added hello.txt with a greeting and checked it."
    assert data["result"]["pushed"] is True
    assert _show(origin, "mosaic/worker/T-cc:hello.txt") == "Hello from Mosaic\n"
    assert data["usage"]["output_tokens"] > 0
    # activity: Claude Code's tool calls, as the dashboard shows them
    events = await cc.engine.store.events_after("0-0", 2000)
    activity = [
        (e.data["tool"], e.data["summary"])
        for e in events
        if e.agent_id == agent_id and e.type.value == "agent.activity"
    ]
    assert ("Write", "hello.txt") in activity
    assert any(tool == "Bash" and "cat hello.txt" in s for tool, s in activity)
    # the real key went upstream only, added by the gateway; Claude Code sent its agent token
    assert scripted.requests
    for req in scripted.requests:
        auth = req.headers.get("Authorization", "") + req.headers.get("x-api-key", "")
        assert FAKE_KEY in auth
    agent_dir = cc.settings.mosaic_state_dir / "agents" / agent_id
    for name in ("stdout.log", "stderr.log"):
        assert FAKE_KEY not in (agent_dir / name).read_text()
    # nothing of its HOME is committed; its HOME is gone once it ended
    assert _show(origin, "mosaic/worker/T-cc:.claude.json") == ""


async def test_a_claude_code_reviewer_returns_a_verdict(cc: Orchestrator, origin: Path) -> None:
    agent_id = await cc.spawn(
        "T-cc-review",
        origin,
        agentType="reviewer",
        gateProfile="minimal",
        context={"instructions": "[script:claude-reviewer-approve]"},
    )
    data = await cc.wait_status(agent_id, "completed", "failed", timeout=120)
    assert data["status"] == "completed", data.get("error")
    assert data["result"]["verdict"]["decision"] == "approve"
    assert data["result"]["pushed"] is False


async def test_the_real_key_never_enters_the_sandbox(
    cc: Orchestrator, origin: Path, scripted: ScriptedModelServer
) -> None:
    """While Claude Code runs (its script runs a long Bash command), no process of its
    sandbox holds the real key in its environment; it holds the per-agent token."""
    agent_id = await cc.spawn(
        "T-cc-env", origin, context={"instructions": "[script:claude-slow-worker]"}
    )
    await cc.wait_status(agent_id, "running", timeout=60)
    environs: list[bytes] = []
    for _ in range(100):
        environs = []
        for proc in _claude_processes():
            with contextlib.suppress(psutil.Error, OSError):
                environs.append(Path(f"/proc/{proc.pid}/environ").read_bytes())
        if environs:
            break
        await asyncio.sleep(0.1)
    assert environs, "no claude process seen"
    for env in environs:
        assert FAKE_KEY.encode() not in env
        assert b"ANTHROPIC_BASE_URL=http://127.0.0.1:" in env
    status, _ = await cc.post(f"/agents/{agent_id}/kill")
    assert status == 200


async def test_kill_leaves_no_claude_process(cc: Orchestrator, origin: Path) -> None:
    agent_id = await cc.spawn(
        "T-cc-kill", origin, context={"instructions": "[script:claude-slow-worker]"}
    )
    await cc.wait_status(agent_id, "running", timeout=60)
    for _ in range(100):
        if _claude_processes():
            break
        await asyncio.sleep(0.1)
    assert _claude_processes(), "Claude Code never started"
    status, body = await cc.post(f"/agents/{agent_id}/kill")
    assert status == 200 and body["status"] == "killed"
    for _ in range(50):
        if not _claude_processes():
            break
        await asyncio.sleep(0.1)
    assert _claude_processes() == []
