"""Detection of gate commands from build files (Python, Node, Makefile) and the tool probe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.gates import GateStatus, LocalGateRunner
from core.gates.detect import PROBE_COMMAND, parse_probe, plan_detected, scan_project
from tests.gates.conftest import make_python_repo

ALL_TOOLS = {"ruff", "mypy", "pytest", "npm", "make", "python3"}


def test_python_project_facts_and_commands(tmp_path: Path) -> None:
    repo = make_python_repo(tmp_path / "repo")
    (repo / "tests" / "integration").mkdir()
    facts = scan_project(repo)
    assert facts.python and facts.python_tests and facts.integration_dir
    assert facts.ruff_config == "pyproject.toml [tool.ruff]"
    assert facts.mypy_config == "pyproject.toml [tool.mypy]" and facts.mypy_has_files
    commands = {g: plan_detected(g, facts, ALL_TOOLS).command for g in ("lint", "typecheck")}
    assert commands == {"lint": "ruff check .", "typecheck": "mypy"}
    assert plan_detected("tests", facts, ALL_TOOLS).command == "pytest -q"
    assert plan_detected("coverage", facts, ALL_TOOLS).command == (
        "pytest -q --cov=sample --cov-report=term"
    )
    assert plan_detected("integration", facts, ALL_TOOLS).command == "pytest -q tests/integration"
    assert "pip wheel" in (plan_detected("build", facts, ALL_TOOLS).command or "")


def test_configured_tool_missing_from_path_is_an_error(tmp_path: Path) -> None:
    facts = scan_project(make_python_repo(tmp_path / "repo"))
    lint = plan_detected("lint", facts, set())
    assert lint.command is None
    assert (
        lint.error_reason
        == "ruff is configured (pyproject.toml [tool.ruff]), but ruff is not on PATH"
    )
    tests = plan_detected("tests", facts, {"ruff"})
    assert tests.error_reason == "Python tests exist, but pytest is not on PATH"


def test_unconfigured_tool_is_used_only_when_on_path(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    facts = scan_project(tmp_path)
    assert (
        facts.ruff_config is None and facts.mypy_config == "mypy.ini" and not facts.mypy_has_files
    )
    assert plan_detected("lint", facts, {"ruff"}).command == "ruff check ."
    assert plan_detected("lint", facts, set()).skip_reason is not None
    assert plan_detected("typecheck", facts, ALL_TOOLS).command == "mypy ."
    # no test files: no tests, no coverage, and the reason says what to do
    skipped = plan_detected("tests", facts, ALL_TOOLS)
    assert skipped.command is None and skipped.skip_reason == (
        "nothing to run: no tests command detected; set [gates] tests in .mosaic/gates.toml"
    )


def test_other_python_config_files(tmp_path: Path) -> None:
    (tmp_path / "setup.cfg").write_text("[metadata]\nname = x\n\n[mypy]\nfiles = x\n")
    (tmp_path / "ruff.toml").write_text("line-length = 90\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "test_x.py").write_text("def test_x() -> None:\n    pass\n")
    (tmp_path / "pyproject.toml").write_text("[tool.coverage.run]\nsource = ['src']\n")
    facts = scan_project(tmp_path)
    assert facts.mypy_config == "setup.cfg [mypy]" and facts.ruff_config == "ruff.toml"
    assert facts.cov_targets == ["src"] and facts.coverage_source_configured
    assert plan_detected("coverage", facts, ALL_TOOLS).command == (
        "pytest -q --cov --cov-report=term"
    )


def test_broken_pyproject_is_named_in_the_skip_reason(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.ruff\n")
    facts = scan_project(tmp_path)
    reason = plan_detected("tests", facts, ALL_TOOLS).skip_reason or ""
    assert "pyproject.toml unreadable" in reason


def test_node_scripts_and_makefile_targets(tmp_path: Path) -> None:
    scripts = {
        "test": "node -e 0",
        "lint": "eslint .",
        "type-check": "tsc --noEmit",
        "test:coverage": "c8 npm test",
        "build": "tsc",
        "test:e2e": "playwright test",
    }
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", "scripts": scripts}))
    (tmp_path / "Makefile").write_text("VAR := 1\nintegration:\n\t./it.sh\n")
    facts = scan_project(tmp_path)
    plans = {g: plan_detected(g, facts, ALL_TOOLS).command for g in ("tests", "lint", "typecheck")}
    assert plans == {"tests": "npm test", "lint": "npm run lint", "typecheck": "npm run type-check"}
    assert plan_detected("coverage", facts, ALL_TOOLS).command == "npm run test:coverage"
    assert plan_detected("integration", facts, ALL_TOOLS).command == "npm run test:e2e"
    assert plan_detected("tests", facts, {"make"}).error_reason == (
        "package.json has a 'test' script, but npm is not on PATH"
    )
    (tmp_path / "package.json").write_text(
        json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})
    )
    (tmp_path / "Makefile").write_text("test:\n\tpytest\nVAR = 2\n")
    facts = scan_project(tmp_path)
    assert facts.make_targets == {"test"}
    assert plan_detected("tests", facts, ALL_TOOLS).command == "make test"
    assert plan_detected("lint", facts, ALL_TOOLS).command is None


def test_unreadable_package_json_is_reported(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{not json")
    facts = scan_project(tmp_path)
    assert facts.node_scripts == {}
    assert "package.json unreadable" in (plan_detected("lint", facts, ALL_TOOLS).skip_reason or "")


def test_probe_parsing() -> None:
    assert parse_probe("tool:ruff\nnoise\ntool:npm\n") == {"ruff", "npm"}
    assert "command -v" in PROBE_COMMAND


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed on this machine")
async def test_node_project_runs_npm_scripts_end_to_end(tmp_path: Path, make_ctx: Any) -> None:
    scripts = {
        "lint": 'node -e "process.exit(0)"',
        "test": "node -e \"console.log('node tests ok')\"",
        "coverage": "node -e \"console.log('All files |   91.3 |   80 |   90 |   92.5 |')\"",
    }
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", "scripts": scripts}))
    runner = LocalGateRunner()
    ctx = make_ctx(tmp_path, "standard")
    results = {r.name: r for r in [*await runner.run(ctx, "pre"), *await runner.run(ctx, "post")]}
    assert results["lint"].status is GateStatus.PASSED and results["lint"].command == "npm run lint"
    assert results["typecheck"].status is GateStatus.SKIPPED
    assert "node tests ok" in results["tests"].output_tail
    assert results["coverage"].status is GateStatus.PASSED
    assert results["coverage"].reason == "coverage 92.5% (threshold 85%)"
