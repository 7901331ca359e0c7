"""The finish stage end to end: leaks block the push, conflicts fail the agent, no hook runs."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path

import pytest

from core.agents.scripts import FAKE_VALUES
from core.models import Event
from tests.conftest import git
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator, OrchestratorFactory


def _branches(origin: Path) -> list[str]:
    out = git("--git-dir", str(origin), "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return out.split()


async def test_leaked_key_blocks_the_push_and_is_never_shown(
    claude: Orchestrator, origin: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    declare_no_tools(origin, tmp_path)  # no gate to run: only the secret scan can block
    caplog.set_level(logging.DEBUG)
    events: list[Event] = []

    async def collect() -> None:
        events.extend(
            await claude.sse(until=lambda evs: any(e.type.value == "agent.failed" for e in evs))
        )

    listener = asyncio.create_task(collect())
    await asyncio.sleep(0.3)
    agent_id = await claude.spawn(
        "T-leak", origin, context={"instructions": "[script:leaky-worker]"}
    )
    data = await claude.wait_status(agent_id, "completed", "failed", timeout=60)
    await asyncio.wait_for(listener, 20)
    assert data["status"] == "failed"
    assert data["error"].startswith("secrets:")
    assert "push blocked" in data["error"]
    assert "mosaic/worker/T-leak" not in _branches(origin)
    findings = data["result"]["scan"]["findings"]
    assert {f["path"] for f in findings} == {"settings.py"}
    detected = [e for e in events if e.type.value == "secret.detected"]
    assert len(detected) == 1 and detected[0].agent_id == agent_id
    public = json.dumps(data) + "".join(e.wire() for e in events) + caplog.text
    for value in FAKE_VALUES.values():
        assert value not in public
    assert findings and all("*" in f["masked"] for f in findings)


async def test_conflict_with_the_target_branch_fails_with_the_files(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    # the agent rewrites README.md; meanwhile someone else changes it on main
    command = "echo agent-version > README.md; echo rewrote readme"
    async with orchestrator_factory(mosaic_agent_command=command + "; sleep 1") as orch:
        agent_id = await orch.spawn("T-conflict", origin)
        await orch.wait_status(agent_id, "running")
        other = tmp_path / "other"
        git("clone", "-q", str(origin), str(other))
        (other / "README.md").write_text("upstream-version\n")
        git("commit", "-qam", "upstream change", cwd=other)
        git("push", "-q", "origin", "HEAD:main", cwd=other)
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=30)
    assert data["status"] == "failed", data
    assert data["error"].startswith("conflicts:") and "README.md" in data["error"]
    assert data["result"]["conflicts"] == ["README.md"]
    assert "mosaic/worker/T-conflict" not in _branches(origin)


async def test_clean_change_is_pushed_and_origin_hooks_never_run(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    marker = tmp_path / "hook-ran"
    for hook in ("pre-receive", "post-receive", "update", "post-checkout", "pre-push"):
        path = origin / "hooks" / hook
        path.write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        path.chmod(0o755)
    command = "mkdir -p src && echo 'x = 1' > src/app.py; echo added app"
    async with orchestrator_factory(mosaic_agent_command=command) as orch:
        agent_id = await orch.spawn("T-push", origin)
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=30)
    assert data["status"] == "completed", data
    assert data["result"]["pushed"] is True
    shown = subprocess.run(
        ["git", "--git-dir", str(origin), "show", "mosaic/worker/T-push:src/app.py"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "x = 1\n"
    assert not marker.exists()
    log = git(
        "--git-dir", str(origin), "log", "-1", "--format=%an <%ae>%n%B", "mosaic/worker/T-push"
    )
    assert log.startswith("Mosaic Orchestrator <orchestrator@mosaic.local>")
    assert "added app" in log and "Mosaic-Task: T-push" in log


STRICT_GATES = """[gates]
typecheck = "true"
lint = "true"
tests = "true"
coverage = "echo TOTAL 10 0 100%"
build = "true"
integration = "true"
ai_review = true
"""


@pytest.mark.parametrize(
    ("script", "expected"),
    [("reviewer-approve", "completed"), ("reviewer-request-changes", "failed")],
)
async def test_ai_review_gate_runs_a_reviewer_session_on_the_diff(
    claude_factory, origin: Path, tmp_path: Path, script: str, expected: str
) -> None:
    seed = tmp_path / "seed-strict"
    git("clone", "-q", str(origin), str(seed))
    (seed / ".mosaic").mkdir()
    (seed / ".mosaic" / "gates.toml").write_text(STRICT_GATES)
    git("add", ".", cwd=seed)
    git("commit", "-qm", "strict gates", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    # the agent's change carries the marker that makes the scripted reviewer answer as scripted
    command = f"echo 'note = \"[script:{script}]\"' > note.py; echo wrote note"
    async with claude_factory(mosaic_agent_command=command) as orch:
        agent_id = await orch.spawn("T-ai", origin, gateProfile="strict")
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=90)
    assert data["status"] == expected, data
    review = next(g for g in data["result"]["gates"] if g["name"] == "ai_review")
    assert review["status"] == ("passed" if expected == "completed" else "failed")
    assert data["usage"]["turns"] >= 1  # the review session is billed to the agent
