"""LocalGateRunner on real sample repositories with the real ruff, mypy, pytest and pytest-cov."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.gates import GateResult, GateStatus, LocalGateRunner
from tests.gates.conftest import Recorder, commit_all, git, make_python_repo

runner = LocalGateRunner()
CAN_BUILD_WHEEL = any(
    importlib.util.find_spec(m) is not None for m in ("wheel", "setuptools.command.bdist_wheel")
)


def by_name(results: list[GateResult]) -> dict[str, GateResult]:
    return {r.name: r for r in results}


async def run_both(ctx: Any) -> list[GateResult]:
    return [*await runner.run(ctx, "pre"), *await runner.run(ctx, "post")]


async def test_standard_profile_on_a_clean_repo_passes_every_gate(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    repo = make_python_repo(tmp_path / "repo")
    ctx = make_ctx(repo, "standard")
    pre = await runner.run(ctx, "pre")
    assert [r.name for r in pre] == ["typecheck", "lint"]
    post = await runner.run(ctx, "post")
    assert [r.name for r in post] == ["tests", "coverage"]
    for result in pre + post:
        assert result.status is GateStatus.PASSED, (result.name, result.reason, result.output_tail)
        assert not result.blocking and result.passed
    results = by_name(pre + post)
    assert results["typecheck"].command == "mypy"
    assert results["lint"].command == "ruff check ."
    assert results["tests"].phase == "post"
    assert "2 passed" in results["tests"].output_tail
    assert results["coverage"].reason == "coverage 100% (threshold 85%)"
    # Events: started then passed, for each gate, with the documented fields.
    assert recorder.types() == ["gate.started", "gate.passed"] * 4
    started, finished = recorder.events[0][1], recorder.events[1][1]
    assert started == {"gate": "typecheck", "phase": "pre"}
    assert set(finished) == {"gate", "phase", "status", "duration_s", "output_tail", "reason"}
    assert finished["status"] == "passed"


async def test_failing_test_fails_the_tests_gate(tmp_path: Path, make_ctx: Any) -> None:
    repo = make_python_repo(tmp_path / "repo", failing_test=True)
    results = by_name(await runner.run(make_ctx(repo, "minimal"), "post"))
    assert list(results) == ["tests"]
    tests = results["tests"]
    assert tests.status is GateStatus.FAILED and tests.blocking
    assert tests.reason == "`pytest -q` exited with 1"
    assert "test_broken" in tests.output_tail


async def test_lint_error_fails_lint_only(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    repo = make_python_repo(tmp_path / "repo", lint_error=True)
    results = by_name(await runner.run(make_ctx(repo, "standard"), "pre"))
    assert results["lint"].status is GateStatus.FAILED
    assert "F401" in results["lint"].output_tail
    assert results["typecheck"].status is GateStatus.PASSED
    failed = [d for e, d in recorder.events if e == "gate.failed"]
    assert [d["gate"] for d in failed] == ["lint"]
    assert failed[0]["status"] == "failed" and "F401" in failed[0]["output_tail"]


async def test_coverage_under_the_threshold_fails_with_the_figure(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo", low_coverage=True)
    results = by_name(await runner.run(make_ctx(repo, "standard"), "post"))
    assert results["tests"].status is GateStatus.PASSED
    coverage = results["coverage"]
    assert coverage.status is GateStatus.FAILED
    assert coverage.reason is not None and "is below the threshold 85%" in coverage.reason
    assert "TOTAL" in coverage.output_tail


async def test_repository_threshold_replaces_the_profiles(tmp_path: Path, make_ctx: Any) -> None:
    repo = make_python_repo(
        tmp_path / "repo", low_coverage=True, gates_toml="coverage_threshold = 5\n"
    )
    results = by_name(await runner.run(make_ctx(repo, "standard"), "post"))
    assert results["coverage"].status is GateStatus.PASSED
    assert results["coverage"].reason is not None
    assert results["coverage"].reason.endswith("(threshold 5%)")


async def test_strict_profile_runs_all_seven_and_reports_skips_with_reasons(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\nbuild = "echo built"\n')
    results = await run_both(make_ctx(repo, "strict", agent_type="reviewer"))
    names = [r.name for r in results]
    assert names == ["typecheck", "lint", "tests", "coverage", "build", "integration", "ai_review"]
    got = by_name(results)
    assert got["build"].status is GateStatus.PASSED and "built" in got["build"].output_tail
    assert got["integration"].status is GateStatus.SKIPPED
    assert got["integration"].reason is not None
    assert "nothing to run" in got["integration"].reason
    assert got["ai_review"].status is GateStatus.SKIPPED
    assert got["ai_review"].reason == "no AI reviewer configured for this run"
    assert not any(r.blocking for r in results)


@pytest.mark.skipif(
    not CAN_BUILD_WHEEL,
    reason="building a wheel offline needs the 'wheel' package or setuptools>=70.1 in the venv",
)
async def test_python_build_is_detected_and_builds_without_leaving_the_wheel(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo")
    [build] = await runner.run(make_ctx(repo, "custom", custom_gates=["build"]), "post")
    assert build.status is GateStatus.PASSED, build.output_tail
    assert build.command is not None and "pip wheel" in build.command
    assert not list(repo.rglob("*.whl"))


async def test_profile_defaults_by_agent_type(tmp_path: Path, make_ctx: Any) -> None:
    repo = make_python_repo(tmp_path / "repo")
    ctx = make_ctx(repo, "", agent_type="tester")
    assert await runner.run(ctx, "pre") == []
    assert [r.name for r in await runner.run(ctx, "post")] == ["tests"]


async def test_repository_commands_win_over_detection(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    gates = (
        '[gates]\ntests = "echo repo-tests-ran"\ncoverage = "echo coverage: 91.5%"\nlint = false\n'
    )
    repo = make_python_repo(tmp_path / "repo", lint_error=True, gates_toml=gates)
    results = by_name(await run_both(make_ctx(repo, "standard")))
    assert results["tests"].command == "echo repo-tests-ran"
    assert "repo-tests-ran" in results["tests"].output_tail
    assert results["coverage"].status is GateStatus.PASSED
    assert results["coverage"].reason == "coverage 91.5% (threshold 85%)"
    # Disabled in the file: skipped (not blocking) and said so, although ruff would fail.
    assert results["lint"].status is GateStatus.SKIPPED
    assert results["lint"].reason == "disabled in .mosaic/gates.toml"
    assert results["typecheck"].command == "mypy"  # not in the file: still detected
    skipped = [d for e, d in recorder.events if d.get("status") == "skipped"]
    assert [(d["gate"], d["reason"]) for d in skipped] == [
        ("lint", "disabled in .mosaic/gates.toml")
    ]
    assert all(e == "gate.passed" for e, d in recorder.events if d.get("status") == "skipped")


async def test_config_is_read_from_the_base_commit_not_the_agents_edit(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(
        tmp_path / "repo", failing_test=True, gates_toml='[gates]\ntests = "pytest -q"\n'
    )
    base = git(repo, "rev-parse", "HEAD")
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\ntests = "true"\n')
    head = commit_all(repo, "agent: make the tests pass")
    trusted = await runner.run(make_ctx(repo, "minimal", base_sha=base, commit=head), "post")
    assert trusted[0].status is GateStatus.FAILED
    assert trusted[0].command == "pytest -q"


async def test_invalid_repository_config_errors_every_gate_with_the_reason(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\ntests = "x"\nfuzz = "y"\n')
    results = await runner.run(make_ctx(repo, "standard"), "pre")
    assert [r.name for r in results] == ["typecheck", "lint"]
    for result in results:
        assert result.status is GateStatus.ERROR and result.blocking
        assert result.reason is not None
        assert ".mosaic/gates.toml is invalid at gates: unknown gate 'fuzz'" in result.reason
    assert recorder.types() == ["gate.started", "gate.failed"] * 2


async def test_custom_profile_runs_the_requested_gates(tmp_path: Path, make_ctx: Any) -> None:
    repo = make_python_repo(tmp_path / "repo")
    ctx = make_ctx(repo, "custom", custom_gates=["lint", "tests"])
    assert [r.name for r in await runner.run(ctx, "pre")] == ["lint"]
    assert [r.name for r in await runner.run(ctx, "post")] == ["tests"]


async def test_custom_profile_falls_back_to_the_repository_list(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\nbuild = "echo built"\n')
    ctx = make_ctx(repo, "custom")
    assert await runner.run(ctx, "pre") == []
    [build] = await runner.run(ctx, "post")
    assert build.name == "build" and build.status is GateStatus.PASSED


@pytest.mark.parametrize("phase", ["pre", "post"])
async def test_custom_profile_with_no_gates_is_an_error_not_a_pass(
    tmp_path: Path, make_ctx: Any, phase: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo")
    [result] = await runner.run(make_ctx(repo, "custom"), phase)
    assert result.name == "gate_config" and result.status is GateStatus.ERROR
    assert result.reason is not None and "names no gates" in result.reason


async def test_missing_worktree_is_an_error_not_a_skip(tmp_path: Path, make_ctx: Any) -> None:
    [result] = await runner.run(make_ctx(tmp_path / "gone", "standard"), "post")
    assert result.status is GateStatus.ERROR
    assert result.reason == f"worktree {tmp_path / 'gone'} does not exist"


async def test_unknown_profile_is_an_error_result(tmp_path: Path, make_ctx: Any) -> None:
    [result] = await runner.run(make_ctx(tmp_path, "paranoid"), "pre")
    assert result.status is GateStatus.ERROR
    assert result.reason is not None and "unknown gate profile 'paranoid'" in result.reason


async def test_repo_without_build_files_skips_every_gate_with_a_reason(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    (tmp_path / "notes.txt").write_text("nothing to build here\n")
    results = await run_both(make_ctx(tmp_path, "standard", agent_type="reviewer"))
    assert [r.status for r in results] == [GateStatus.SKIPPED] * 4
    for result in results:
        assert result.reason is not None
        assert result.reason.startswith("nothing to run: no build files found")
        assert f"set [gates] {result.name} in .mosaic/gates.toml" in result.reason
        assert not result.required and not result.blocking
    assert "gate.failed" not in recorder.types()


async def test_a_workers_skipped_gates_block_with_what_to_do(
    tmp_path: Path, make_ctx: Any, recorder: Recorder
) -> None:
    # SPEC §17: a gate the profile requires must run; "nothing to run" is not a pass for a worker
    (tmp_path / "notes.txt").write_text("nothing to build here\n")
    results = await run_both(make_ctx(tmp_path, "standard", commit="c" * 40))
    assert [r.status for r in results] == [GateStatus.SKIPPED] * 4
    for result in results:
        assert result.required and result.blocking
        assert result.reason is not None
        assert result.reason.startswith("nothing to run: no build files found")
        assert (
            f"the standard profile requires {result.name}, so a worker's change is not pushed"
            in result.reason
        )
        assert f"set {result.name} = false in .mosaic/gates.toml on the base branch" in (
            result.reason
        )
    assert recorder.types() == ["gate.started", "gate.failed"] * 4
    assert {d["status"] for e, d in recorder.events if e == "gate.failed"} == {"skipped"}


async def test_hanging_gate_is_killed_at_its_timeout_with_no_process_left(
    tmp_path: Path, make_ctx: Any
) -> None:
    marker = f"{os.getpid()}2001"
    gates = f'timeout_s = 1\n[gates]\ntests = "sleep {marker} & sleep {marker}"\n'
    repo = make_python_repo(tmp_path / "repo", gates_toml=gates)
    [result] = await runner.run(make_ctx(repo, "minimal"), "post")
    assert result.status is GateStatus.FAILED
    assert result.reason == "timed out after 1s; its process tree was killed"
    left = [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if marker in " ".join(p.info["cmdline"] or []) and p.info["status"] != "zombie"
    ]
    assert left == []


async def test_context_timeout_applies_without_a_repository_timeout(
    tmp_path: Path, make_ctx: Any
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\ntests = "sleep 30"\n')
    [result] = await runner.run(make_ctx(repo, "minimal", gate_timeout_s=0.5), "post")
    assert result.status is GateStatus.FAILED and "timed out after 0.5s" in (result.reason or "")


@pytest.mark.parametrize(
    ("command", "status", "reason"),
    [
        ("definitely-not-a-tool-xyz", GateStatus.ERROR, "command not found (exit 127)"),
        ("echo all good", GateStatus.ERROR, "no coverage percentage found"),
        ("echo 'TOTAL 10 1 90%'; exit 2", GateStatus.FAILED, "exited with 2 (coverage 90%)"),
        ("exit 4", GateStatus.FAILED, "exited with 4"),
        ("echo 'Total coverage: 40.25%'", GateStatus.FAILED, "coverage 40.25% is below"),
    ],
)
async def test_coverage_outcomes(
    tmp_path: Path, make_ctx: Any, command: str, status: GateStatus, reason: str
) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml=f'[gates]\ncoverage = "{command}"\n')
    [result] = await runner.run(make_ctx(repo, "custom"), "post")
    assert result.status is status
    assert result.reason is not None and reason in result.reason


async def test_executor_failure_is_an_error_result(tmp_path: Path, make_ctx: Any) -> None:
    async def broken(command: str, *, cwd: Path, timeout_s: float) -> Any:
        if "command -v" in command:  # the tool probe
            raise OSError("sandbox is gone")
        raise OSError("sandbox is gone")

    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\ntests = "pytest -q"\n')
    ctx = make_ctx(repo, "standard", executor=broken)
    results = by_name(await run_both(ctx))
    assert results["tests"].status is GateStatus.ERROR
    assert results["tests"].reason == "could not run `pytest -q`: OSError: sandbox is gone"
    assert results["lint"].status is GateStatus.ERROR
    assert results["lint"].reason is not None
    assert "could not look up the gate tools" in results["lint"].reason


async def test_a_broken_event_sink_does_not_stop_the_gates(tmp_path: Path, make_ctx: Any) -> None:
    async def emit(event: str, data: dict[str, Any]) -> None:
        raise RuntimeError("bus down")

    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\ntests = "true"\n')
    [result] = await runner.run(make_ctx(repo, "minimal", emit=emit), "post")
    assert result.status is GateStatus.PASSED


async def test_output_tail_is_bounded(tmp_path: Path, make_ctx: Any, recorder: Recorder) -> None:
    repo = make_python_repo(tmp_path / "repo", gates_toml='[gates]\ntests = "seq 1 20000"\n')
    [result] = await runner.run(make_ctx(repo, "minimal"), "post")
    assert len(result.output_tail) == 2000
    assert result.output_tail.endswith("20000")
    assert len(recorder.events[-1][1]["output_tail"]) == 2000
