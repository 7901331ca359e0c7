"""Skills (SPEC §15): folders under MOSAIC_SKILLS_DIR named in ``context.skills``. The builtin
runtime gets each SKILL.md in its system prompt; Claude Code finds them in ``~/.claude/skills``
(read-only) and offers them to the model; an unknown skill is refused before anything exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agents import ScriptedModelServer
from core.agents.claude_code import find_claude
from tests.e2e.gate_repos import declare_no_tools

SKILL = """---
name: release-notes
description: Use when writing release notes for the mosaic-skill-canary project.
---
Write release notes as a bulleted list; the canary word is zebra-quartz.
"""


@pytest.fixture
def skills_dir(tmp_path: Path) -> Path:
    root = tmp_path / "skills"
    (root / "release-notes").mkdir(parents=True)
    (root / "release-notes" / "SKILL.md").write_text(SKILL)
    (root / "empty").mkdir()
    for path in (tmp_path, root, root / "release-notes"):
        path.chmod(0o755)
    return root


async def test_the_builtin_runtime_gets_the_skill_in_its_system_prompt(
    claude_factory, origin: Path, tmp_path: Path, scripted: ScriptedModelServer, skills_dir: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    async with claude_factory(mosaic_skills_dir=skills_dir) as orch:
        agent_id = await orch.spawn(
            "T-skill",
            origin,
            context={"instructions": "[script:worker-hello]", "skills": ["release-notes"]},
        )
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
    assert data["status"] == "completed", data.get("error")
    systems = [json.dumps(r.body.get("system")) for r in scripted.requests if r.body]
    assert systems and all("zebra-quartz" in s for s in systems)


async def test_an_unknown_skill_is_a_400_before_anything_is_created(
    claude_factory, origin: Path, skills_dir: Path
) -> None:
    async with claude_factory(mosaic_skills_dir=skills_dir) as orch:
        for skills in (["nope"], ["empty"], ["../skills"]):
            status, body = await orch.post(
                "/agents/spawn",
                {
                    "taskId": "T-bad-skill",
                    "agentType": "worker",
                    "context": {"repository": str(origin), "skills": skills},
                },
            )
            assert status == 400, body
            assert "skill" in body["error"]["message"]
        status, agents = await orch.get("/agents")
        assert agents["agents"] == []


@pytest.mark.skipif(find_claude(None) is None, reason="the Claude Code CLI is not installed")
async def test_claude_code_finds_the_skill_in_its_home(
    claude_factory, origin: Path, tmp_path: Path, scripted: ScriptedModelServer, skills_dir: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    async with claude_factory(mosaic_runtime="claude-code", mosaic_skills_dir=skills_dir) as orch:
        agent_id = await orch.spawn(
            "T-cc-skill",
            origin,
            context={"instructions": "[script:claude-worker-hello]", "skills": ["release-notes"]},
        )
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=120)
    assert data["status"] == "completed", data.get("error")
    bodies = [json.dumps(r.body) for r in scripted.requests if r.body]
    assert any("mosaic-skill-canary" in b for b in bodies), "Claude Code did not offer the skill"
    assert SKILL.strip() == (skills_dir / "release-notes" / "SKILL.md").read_text().strip()
