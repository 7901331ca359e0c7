"""A repository's own toolchain runs its gates: every directory on the orchestrator's PATH is
visible read-only in the sandbox (SPEC §15), under the command runtime, as the sandbox user.

The orchestrator runs here with the test's own virtualenv (which holds pytest) first on its PATH,
as an operator's shell would have it; the repository's gate is ``python -m pytest -q``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.e2e.gate_repos import push_files
from tests.spine.conftest import OrchestratorFactory

GATES = """\
[gates]
typecheck = false
lint = false
coverage = false
tests = "python -m pytest -q -p no:cacheprovider"
"""
TEST_FILE = "from app import value\n\n\ndef test_value():\n    assert value() == 2\n"


@pytest.fixture
def venv_on_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test runner's venv first on the orchestrator's PATH (the engine reads it at start)."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "python").exists()
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    return venv_bin


async def _run(
    orchestrator_factory: OrchestratorFactory, origin: Path, task: str, answer: int
) -> dict[str, object]:
    agent = f"printf 'def value():\\n    return {answer}\\n' > app.py; echo wrote app.py"
    async with orchestrator_factory(mosaic_agent_command=agent, sandbox_backend="bwrap") as orch:
        agent_id = await orch.spawn(task, origin)
        return await orch.wait_status(agent_id, "completed", "failed", timeout=90)


async def test_a_gate_runs_the_operators_venv_pytest(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path, venv_on_path: Path
) -> None:
    push_files(origin, tmp_path, {".mosaic/gates.toml": GATES, "test_app.py": TEST_FILE})
    data = await _run(orchestrator_factory, origin, "T-tool-ok", 2)
    assert data["status"] == "completed", data
    gates = {g["name"]: g for g in data["result"]["gates"]}  # type: ignore[index]
    assert gates["tests"]["status"] == "passed", gates["tests"]
    assert "1 passed" in gates["tests"]["output_tail"]


async def test_a_failing_test_fails_the_gate_for_the_right_reason(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path, venv_on_path: Path
) -> None:
    push_files(origin, tmp_path, {".mosaic/gates.toml": GATES, "test_app.py": TEST_FILE})
    data = await _run(orchestrator_factory, origin, "T-tool-fail", 3)
    assert data["status"] == "failed", data
    assert str(data["error"]).startswith("gates: tests failed"), data["error"]
    gates = {g["name"]: g for g in data["result"]["gates"]}  # type: ignore[index]
    tail = gates["tests"]["output_tail"]
    assert "1 failed" in tail and "assert 3 == 2" in tail, tail
    assert "command not found" not in tail and "No module named" not in tail
