"""The secret scan has no bypass: each way a token used to slip through now fails the agent.

Each agent is an external command in a real worktree; the orchestrator commits, scans and would
push to a bare origin. Every test asserts what a user sees: the agent failed at the ``secrets``
step, nothing reached the origin, and the token appears in no status, event or log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.git.secret_rules import UPPER32, fake
from core.models import Event
from tests.conftest import git
from tests.spine.conftest import OrchestratorFactory

# built at runtime so this file holds no realistic-looking secret
GH = "gh" + "p_" + fake(36, seed="e2e-bypass-gh")
AWS = "AK" + "IA" + fake(16, UPPER32, seed="e2e-bypass-aws")


GATES = """[gates]
typecheck = "true"
lint = "true"
tests = "true"
coverage = "echo TOTAL 10 0 100%"
"""


@pytest.fixture
def origin(origin: Path, tmp_path: Path) -> Path:
    """The origin, with gates that pass: only the secret scan can stop these pushes."""
    seed = tmp_path / "seed-gates"
    git("clone", "-q", str(origin), str(seed))
    (seed / ".mosaic").mkdir()
    (seed / ".mosaic" / "gates.toml").write_text(GATES)
    git("add", ".", cwd=seed)
    git("commit", "-qm", "gates", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    return origin


@dataclass
class Seen:
    status: dict[str, Any]
    events: list[Event]
    logs: str

    @property
    def public(self) -> str:
        return json.dumps(self.status) + "".join(e.wire() for e in self.events) + self.logs


def _branches(origin: Path) -> list[str]:
    out = git("--git-dir", str(origin), "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return out.split()


async def _run_agent(
    factory: OrchestratorFactory,
    origin: Path,
    task: str,
    command: str,
    caplog: pytest.LogCaptureFixture,
    **settings: Any,
) -> Seen:
    caplog.set_level(logging.DEBUG)
    async with factory(mosaic_agent_command=command, **settings) as orch:
        events: list[Event] = []

        async def collect() -> None:
            events.extend(
                await orch.sse(until=lambda evs: any(e.type.value == "agent.failed" for e in evs))
            )

        listener = asyncio.create_task(collect())
        await asyncio.sleep(0.3)
        agent_id = await orch.spawn(task, origin)
        status = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
        await asyncio.wait_for(listener, 20)
    return Seen(status, events, caplog.text)


def _assert_blocked(seen: Seen, origin: Path, task: str, *secrets: str) -> None:
    assert seen.status["status"] == "failed", seen.status
    assert seen.status["error"].startswith("secrets: "), seen.status["error"]
    assert seen.status["error"].endswith("push blocked")
    assert seen.status["result"]["pushed"] is False
    assert f"mosaic/worker/{task}" not in _branches(origin)  # nothing reached the origin
    detected = [e for e in seen.events if e.type.value == "secret.detected"]
    assert len(detected) == 1
    for secret in secrets:
        assert secret not in seen.public
        assert secret[4:20] not in seen.public  # not even a fragment beyond the mask


async def test_gitattributes_minus_diff_does_not_hide_a_token(
    orchestrator_factory: OrchestratorFactory, origin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # "-diff" made `git log -p` print "Binary files differ" instead of the token
    command = f"printf '*.cfg -diff\\n' > .gitattributes; echo 'token = {GH}' > deploy.cfg; echo ok"
    seen = await _run_agent(orchestrator_factory, origin, "T-attr", command, caplog)
    _assert_blocked(seen, origin, "T-attr", GH)
    assert "in deploy.cfg" in seen.status["error"]
    findings = seen.status["result"]["scan"]["findings"]
    assert [(f["path"], f["line"], f["rule"]) for f in findings] == [
        ("deploy.cfg", 1, "github-personal-access-token")
    ]


async def test_a_nul_byte_does_not_hide_an_aws_key(
    orchestrator_factory: OrchestratorFactory, origin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a NUL byte at the start made git (and the old scanner) treat the file as binary
    command = f"printf '\\000aws_access_key_id = {AWS}\\n' > keys.dat; echo ok"
    seen = await _run_agent(orchestrator_factory, origin, "T-nul", command, caplog)
    _assert_blocked(seen, origin, "T-nul", AWS)
    findings = seen.status["result"]["scan"]["findings"]
    assert [(f["path"], f["rule"], f["masked"]) for f in findings] == [
        ("keys.dat", "aws-access-key-id", "AKIA****")
    ]


async def test_a_token_in_the_summary_blocks_and_is_masked_everywhere(
    orchestrator_factory: OrchestratorFactory, origin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the last stdout line is the summary: it became the commit message and the status summary;
    # the agent lingers so the monitor also shows it as the last output line
    command = f"echo 'x = 1' > app.py; echo 'done, pushed with {GH}'; sleep 1.5"
    seen = await _run_agent(orchestrator_factory, origin, "T-summary", command, caplog)
    _assert_blocked(seen, origin, "T-summary", GH)
    assert "in (summary)" in seen.status["error"]
    assert seen.status["summary"] == "done, pushed with ghp_****"
    # the commit kept locally carries the masked summary, not the token
    findings = seen.status["result"]["scan"]["findings"]
    assert [(f["path"], f["rule"]) for f in findings] == [
        ("(summary)", "github-personal-access-token")
    ]


async def test_a_token_used_as_a_file_name_blocks_and_the_name_is_masked(
    orchestrator_factory: OrchestratorFactory, origin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    command = f"mkdir -p notes && echo hello > notes/{GH}.txt; echo ok"
    seen = await _run_agent(orchestrator_factory, origin, "T-name", command, caplog)
    _assert_blocked(seen, origin, "T-name", GH)
    assert "in notes/ghp_****.txt" in seen.status["error"]
    findings = seen.status["result"]["scan"]["findings"]
    assert [(f["path"], f["line"], f["rule"]) for f in findings] == [
        ("notes/ghp_****.txt", 0, "github-personal-access-token")
    ]


async def test_a_blob_over_the_size_limit_blocks_the_push_naming_it(
    orchestrator_factory: OrchestratorFactory, origin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # never skipped: what the scan cannot read does not go out
    command = "mkdir -p assets && head -c 1200000 /dev/urandom > assets/big.bin; echo ok"
    seen = await _run_agent(
        orchestrator_factory, origin, "T-big", command, caplog, scan_max_file_mb=1
    )
    assert seen.status["status"] == "failed", seen.status
    assert seen.status["error"].startswith("secrets: assets/big.bin is larger than 1 MB")
    assert seen.status["error"].endswith("push blocked")
    assert "mosaic/worker/T-big" not in _branches(origin)
    [blob] = seen.status["result"]["scan"]["tooLarge"]
    assert (blob["path"], blob["size"]) == ("assets/big.bin", 1_200_000)
