"""SPEC §17, gate integrity: gates come from the base commit and a required gate must run.

The agent owns its worktree; whatever it edits or deletes there, the gates are those of the commit
it started from, and a gate a worker's profile requires is never passed by being skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from core.gates import GateResult, GateStatus, LocalGateRunner
from core.gates.detect import scan_project
from core.gates.tree import CommitTree
from tests.gates.conftest import PYPROJECT, Recorder, commit_all, git, make_python_repo

runner = LocalGateRunner()


def by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {r.name: r for r in results}


async def test_deleting_the_tests_does_not_skip_the_tests_gate(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    shutil.rmtree(repo / "tests")
    head = commit_all(repo, "agent: no more failing tests")
    got = by_name(await runner.run(make_ctx(repo, "standard", base_sha=base, commit=head), "post"))
    assert got["tests"].status is GateStatus.FAILED and got["tests"].command == "pytest -q"
    assert got["tests"].reason == "`pytest -q` exited with 5"  # pytest: no tests collected
    assert got["coverage"].status in (GateStatus.FAILED, GateStatus.ERROR)
    assert all(r.blocking for r in got.values())
    # what detection on the worktree would have said: nothing to run
    worktree_view = await runner.run(make_ctx(repo, "standard", agent_type="reviewer"), "post")
    assert {r.status for r in worktree_view} == {GateStatus.SKIPPED}


async def test_detection_ignores_a_worktree_only_build_file_change(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    # the agent drops the mypy file list and the build system, and hides its test from discovery
    weakened = PYPROJECT.replace('[tool.mypy]\nfiles = ["sample"]\n', "")
    weakened = weakened.split("[build-system]")[0]
    (repo / "pyproject.toml").write_text(weakened)
    (repo / "tests" / "test_calc.py").rename(repo / "tests" / "calc_checks.py")
    head = commit_all(repo, "agent: simpler config")
    facts_base = scan_project(CommitTree(repo, base))
    facts_work = scan_project(repo)
    assert facts_base.mypy_has_files and not facts_work.mypy_has_files
    assert facts_base.python_tests and not facts_work.python_tests
    assert "build-system" in facts_base.pyproject and "build-system" not in facts_work.pyproject
    ctx = make_ctx(repo, "strict", base_sha=base, commit=head, agent_type="reviewer")
    got = by_name([*await runner.run(ctx, "pre"), *await runner.run(ctx, "post")])
    assert got["typecheck"].command == "mypy"
    assert got["tests"].command == "pytest -q" and got["tests"].status is GateStatus.FAILED
    assert got["build"].command is not None and "pip wheel" in got["build"].command


async def test_a_required_gate_with_nothing_to_run_blocks_unless_the_base_disables_it(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\nbuild = "true"\n')
    shutil.rmtree(repo / "tests")
    base = commit_all(repo, "no tests in this project")
    ctx = make_ctx(repo, "custom", custom_gates=["tests", "build"], base_sha=base, commit=base)
    got = by_name(await runner.run(ctx, "post"))
    assert got["tests"].status is GateStatus.SKIPPED and got["tests"].blocking
    assert got["tests"].reason is not None
    assert got["tests"].reason.startswith("nothing to run: no tests command detected")
    assert "the custom profile requires tests" in got["tests"].reason
    assert got["build"].status is GateStatus.PASSED and got["build"].required
    # the agent cannot disable the gate itself: only the base commit's file counts
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\nbuild = "true"\ntests = false\n')
    head = commit_all(repo, "agent: disable the tests gate")
    ctx = make_ctx(repo, "custom", custom_gates=["tests"], base_sha=base, commit=head)
    [tests] = await runner.run(ctx, "post")
    assert tests.blocking
    # disabled on the base branch: skipped with the reason, and not blocking
    ctx = make_ctx(repo, "custom", custom_gates=["tests"], base_sha=head, commit=head)
    [tests] = await runner.run(ctx, "post")
    assert tests.status is GateStatus.SKIPPED and not tests.required and not tests.blocking
    assert tests.reason == "disabled in .mosaic/gates.toml"
    assert [d["status"] for e, d in recorder.events if e == "gate.failed"] == ["skipped"] * 2


async def test_a_worker_with_nothing_to_push_is_not_blocked_before_the_commit(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml="[gates]\nlint = false\n")
    base = git(repo, "rev-parse", "HEAD")
    ctx = make_ctx(repo, "custom", custom_gates=["integration"], base_sha=base)
    # no change in the worktree: the orchestrator will commit (and push) nothing
    [clean] = await runner.run(ctx, "post")
    assert clean.status is GateStatus.SKIPPED and not clean.blocking
    (repo / "sample" / "new.py").write_text("X = 1\n")  # an untracked file is a change
    [dirty] = await runner.run(ctx, "post")
    assert dirty.status is GateStatus.SKIPPED and dirty.blocking


async def test_ai_review_without_a_reviewer_blocks_a_worker_but_an_empty_diff_does_not(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD")
    (repo / "sample" / "new.py").write_text("X = 1\n")
    head = commit_all(repo, "agent")
    ctx = make_ctx(repo, "custom", custom_gates=["ai_review"], base_sha=base, commit=head)
    [review] = await runner.run(ctx, "post")
    assert review.status is GateStatus.SKIPPED and review.blocking
    assert review.reason is not None
    assert review.reason.startswith("no AI reviewer configured for this run; the custom profile")
    assert "configure a model for the AI review, or set ai_review = false" in review.reason

    async def approve(diff: str) -> tuple[bool, str]:
        return True, "fine"

    ctx = make_ctx(
        repo, "custom", custom_gates=["ai_review"], base_sha=head, commit=head, ai_review=approve
    )
    [empty] = await runner.run(ctx, "post")
    assert empty.status is GateStatus.SKIPPED and not empty.blocking
    reviewer = make_ctx(
        repo, "custom", custom_gates=["ai_review"], base_sha=base, commit=head,
        agent_type="reviewer",
    )  # fmt: skip
    [skipped] = await runner.run(reviewer, "post")
    assert skipped.status is GateStatus.SKIPPED and not skipped.blocking


async def test_an_unreadable_base_commit_is_an_error_not_a_skip(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\nlint = "true"\n')
    base = git(repo, "rev-parse", "HEAD")
    ctx = make_ctx(repo, "standard", base_sha=base, commit=base)
    shutil.rmtree(repo / ".git" / "objects")  # the base can no longer be read
    (repo / ".git" / "objects").mkdir()
    got = by_name(await runner.run(ctx, "pre"))
    assert all(r.status is GateStatus.ERROR and r.blocking for r in got.values())
