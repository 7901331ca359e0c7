"""The ai_review gate: the reviewer sees the real diff base..commit and its verdict decides."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.gates import GateStatus, LocalGateRunner
from tests.gates.conftest import Recorder, commit_all, git, make_python_repo

runner = LocalGateRunner()
ONLY_AI = "[gates]\nai_review = true\n"


@pytest.fixture
def change(tmp_path: Path) -> tuple[Path, str, str]:
    repo = make_python_repo(tmp_path / "repo", gates_toml=ONLY_AI)
    base = git(repo, "rev-parse", "HEAD")
    (repo / "sample" / "calc.py").write_text("def mul(a: int, b: int) -> int:\n    return a * b\n")
    head = commit_all(repo, "agent: add mul")
    return repo, base, head


@pytest.mark.parametrize(("approved", "status"), [(True, "passed"), (False, "failed")])
async def test_reviewer_sees_the_diff_and_its_verdict_decides(
    change: tuple[Path, str, str], make_ctx: Any, approved: bool, status: str
) -> None:
    repo, base, head = change
    seen: list[str] = []

    async def reviewer(diff: str) -> tuple[bool, str]:
        seen.append(diff)
        return approved, "looks fine" if approved else "mul is untested"

    ctx = make_ctx(repo, "custom", ai_review=reviewer, base_sha=base, commit=head)
    [result] = await runner.run(ctx, "post")
    assert result.name == "ai_review" and result.status == status
    assert "+def mul(a: int, b: int) -> int:" in seen[0]
    assert "-def add" in seen[0]
    assert result.output_tail in ("looks fine", "mul is untested")
    if not approved:
        assert result.reason == "the AI reviewer did not approve the change"


async def test_commit_defaults_to_head(change: tuple[Path, str, str], make_ctx: Any) -> None:
    repo, base, _ = change

    async def reviewer(diff: str) -> tuple[bool, str]:
        return "+def mul" in diff, ""

    [result] = await runner.run(make_ctx(repo, "custom", ai_review=reviewer, base_sha=base), "post")
    assert result.status is GateStatus.PASSED


async def test_without_reviewer_or_base_it_is_skipped_with_the_reason(
    change: tuple[Path, str, str], make_ctx: Any, recorder: Recorder
) -> None:
    repo, base, head = change

    async def reviewer(diff: str) -> tuple[bool, str]:
        raise AssertionError("not called")

    [no_reviewer] = await runner.run(make_ctx(repo, "custom", base_sha=base), "post")
    assert no_reviewer.status is GateStatus.SKIPPED
    assert no_reviewer.reason == "no AI reviewer configured for this run"
    [no_base] = await runner.run(make_ctx(repo, "custom", ai_review=reviewer), "post")
    assert no_base.status is GateStatus.SKIPPED
    assert no_base.reason == "no base commit to diff against"
    [empty] = await runner.run(
        make_ctx(repo, "custom", ai_review=reviewer, base_sha=head, commit=head), "post"
    )
    assert empty.status is GateStatus.SKIPPED and "nothing to review" in (empty.reason or "")
    finished = [d for e, d in recorder.events if e != "gate.started"]
    assert [e for e, _ in recorder.events if e != "gate.started"] == ["gate.passed"] * 3
    assert [d["status"] for d in finished] == ["skipped"] * 3


async def test_reviewer_failures_and_bad_revisions_are_errors(
    change: tuple[Path, str, str], make_ctx: Any
) -> None:
    repo, base, _ = change

    async def crashing(diff: str) -> tuple[bool, str]:
        raise RuntimeError("model overloaded")

    async def slow(diff: str) -> tuple[bool, str]:
        await asyncio.sleep(30)
        return True, ""

    [crashed] = await runner.run(
        make_ctx(repo, "custom", ai_review=crashing, base_sha=base), "post"
    )
    assert crashed.status is GateStatus.ERROR
    assert crashed.reason == "AI review failed: RuntimeError: model overloaded"
    [timed] = await runner.run(
        make_ctx(repo, "custom", ai_review=slow, base_sha=base, gate_timeout_s=0.3), "post"
    )
    assert timed.status is GateStatus.ERROR and timed.reason == "AI review timed out after 0.3s"
    for bad in ("--output=/tmp/pwned", "f" * 40):
        [result] = await runner.run(
            make_ctx(repo, "custom", ai_review=crashing, base_sha=base, commit=bad), "post"
        )
        assert result.status is GateStatus.ERROR
        assert result.reason is not None and "could not compute the diff" in result.reason
