"""Gates an agent cannot weaken (SPEC §17), end to end: the real engine, real bwrap, bare origins.

The agent is an external command (``MOSAIC_AGENT_COMMAND``) that edits its worktree the way a
careless or malicious agent would; what reaches the origin is what the base commit's gates allow.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import git
from tests.e2e.gate_repos import branches, push_files
from tests.spine.conftest import Orchestrator, OrchestratorFactory

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")

CHECKED = """\
[gates]
typecheck = false
lint = false
coverage = false
tests = "sh ci/test.sh"
"""
TEST_SH = '#!/bin/sh\ntest "$(cat app.txt)" = good || { echo "app.txt is not good" >&2; exit 1; }\n'
CHANGED = "ci/test.sh was changed by the agent; the gate ran its base version"


@pytest.fixture
def bwrap_orch(orchestrator_factory: OrchestratorFactory, cgroup: str) -> Any:
    @contextlib.asynccontextmanager
    async def start(command: str) -> AsyncIterator[Orchestrator]:
        async with orchestrator_factory(
            mosaic_agent_command=command, sandbox_backend="bwrap", sandbox_cgroup_parent=cgroup
        ) as orch:
            yield orch

    return start


def staged_copies() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mosaic-gate-base-*"))


async def run_agent(bwrap_orch: Any, origin: Path, task: str, command: str) -> dict[str, Any]:
    async with bwrap_orch(command) as orch:
        agent_id = await orch.spawn(task, origin)
        data: dict[str, Any] = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
    return data


def gates_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in data["result"]["gates"]}


async def test_a_rewritten_test_script_runs_at_its_base_version_and_blocks_the_push(
    bwrap_orch: Any, origin: Path, tmp_path: Path
) -> None:
    push_files(
        origin, tmp_path,
        {".mosaic/gates.toml": CHECKED, "ci/test.sh": TEST_SH, "app.txt": "good\n"},
        executable=("ci/test.sh",),
    )  # fmt: skip
    before = staged_copies()
    # the agent breaks the code and makes the test script pass whatever happens
    agent = "echo bad > app.txt; printf 'exit 0\\n' > ci/test.sh; echo fixed everything"
    data = await run_agent(bwrap_orch, origin, "T-weaken", agent)
    assert data["status"] == "failed", data
    assert data["error"].startswith("gates: tests failed: `sh ci/test.sh` exited with 1")
    assert CHANGED in data["error"]
    tests = gates_of(data)["tests"]
    assert tests["status"] == "failed" and "app.txt is not good" in tests["output_tail"]
    assert tests["notes"] == [CHANGED] and CHANGED in tests["reason"]
    assert "mosaic/worker/T-weaken" not in branches(origin)
    assert staged_copies() == before


async def test_a_harmless_edit_to_the_test_script_is_reported_and_pushed(
    bwrap_orch: Any, origin: Path, tmp_path: Path
) -> None:
    push_files(
        origin, tmp_path,
        {".mosaic/gates.toml": CHECKED, "ci/test.sh": TEST_SH, "app.txt": "good\n"},
        executable=("ci/test.sh",),
    )  # fmt: skip
    agent = "echo '# checks app.txt' >> ci/test.sh; echo 'more' > notes.txt; echo documented"
    data = await run_agent(bwrap_orch, origin, "T-harmless", agent)
    assert data["status"] == "completed", data
    tests = gates_of(data)["tests"]
    assert tests["status"] == "passed" and tests["notes"] == [CHANGED]
    assert tests["reason"] == CHANGED
    assert "mosaic/worker/T-harmless" in branches(origin)
    pushed = git("--git-dir", str(origin), "show", "mosaic/worker/T-harmless:ci/test.sh")
    assert pushed.endswith("# checks app.txt")  # the agent's change itself goes through


async def test_deleting_the_tests_does_not_skip_the_tests_gate(
    bwrap_orch: Any, origin: Path, tmp_path: Path
) -> None:
    # tests detected at the base (a Makefile target running the test script), not configured
    push_files(
        origin, tmp_path,
        {
            ".mosaic/gates.toml": "[gates]\ntypecheck = false\nlint = false\ncoverage = false\n",
            "Makefile": "test:\n\tsh tests/run.sh\n",
            "tests/run.sh": TEST_SH,
            "app.txt": "good\n",
        },
    )  # fmt: skip
    agent = "rm -rf tests Makefile; echo bad > app.txt; echo removed the failing tests"
    data = await run_agent(bwrap_orch, origin, "T-delete", agent)
    assert data["status"] == "failed", data
    assert data["error"].startswith("gates: tests failed: `make test` exited with 2")
    tests = gates_of(data)["tests"]
    assert tests["command"] == "make test" and "app.txt is not good" in tests["output_tail"]
    assert tests["notes"] == [
        "Makefile was deleted by the agent; the gate ran its base version",
        "tests/run.sh was deleted by the agent; the gate ran its base version",
    ]
    assert "mosaic/worker/T-delete" not in branches(origin)


async def test_a_required_gate_with_nothing_to_run_blocks_until_the_base_disables_it(
    bwrap_orch: Any, origin: Path, tmp_path: Path
) -> None:
    # coverage: not configured and nothing to detect; the standard profile requires it
    push_files(
        origin, tmp_path,
        {".mosaic/gates.toml": '[gates]\ntypecheck = false\nlint = false\ntests = "true"\n'},
    )  # fmt: skip
    agent = "echo 'x' > change.txt; echo changed"
    data = await run_agent(bwrap_orch, origin, "T-skip", agent)
    assert data["status"] == "failed", data
    assert data["error"].startswith("gates: coverage skipped: nothing to run")
    coverage = gates_of(data)["coverage"]
    assert coverage["status"] == "skipped" and coverage["required"] is True
    assert "set coverage = false in .mosaic/gates.toml on the base branch" in coverage["reason"]
    assert "mosaic/worker/T-skip" not in branches(origin)
    # the agent cannot switch the gate off itself ...
    agent_disables = (
        'printf \'[gates]\\ntypecheck = false\\nlint = false\\ntests = "true"\\n'
        "coverage = false\\n' > .mosaic/gates.toml; echo disabled coverage"
    )
    data = await run_agent(bwrap_orch, origin, "T-skip-2", agent_disables)
    assert data["status"] == "failed" and data["error"].startswith("gates: coverage skipped")
    # ... the base branch can
    push_files(
        origin, tmp_path,
        {".mosaic/gates.toml": "[gates]\ntypecheck = false\nlint = false\ntests = \"true\"\n"
                               "coverage = false\n"},
    )  # fmt: skip
    data = await run_agent(bwrap_orch, origin, "T-skip-3", agent)
    assert data["status"] == "completed", data
    coverage = gates_of(data)["coverage"]
    assert coverage["status"] == "skipped" and coverage["required"] is False
    assert coverage["reason"] == "disabled in .mosaic/gates.toml"
    assert "mosaic/worker/T-skip-3" in branches(origin)


async def test_detection_at_the_base_is_not_fooled_by_the_agents_build_files(
    bwrap_orch: Any, origin: Path, tmp_path: Path
) -> None:
    # a Python project with tests at the base: the tests gate is detected (pytest -q)
    push_files(
        origin, tmp_path,
        {
            ".mosaic/gates.toml": "[gates]\ntypecheck = false\nlint = false\ncoverage = false\n",
            "pyproject.toml": '[project]\nname = "app"\n[tool.pytest.ini_options]\n',
            "tests/test_app.py": "def test_app() -> None:\n    assert False\n",
        },
    )  # fmt: skip
    # the agent removes the Python config and hides its failing test from discovery
    agent = "rm pyproject.toml; mv tests/test_app.py tests/app_checks.py; echo tidied up"
    data = await run_agent(bwrap_orch, origin, "T-pyproject", agent)
    assert data["status"] == "failed", data
    tests = gates_of(data)["tests"]
    assert tests["status"] in ("failed", "error"), tests  # never "skipped"
    assert "pytest" in (tests["command"] or tests["reason"])
    assert "mosaic/worker/T-pyproject" not in branches(origin)


async def test_a_deleted_script_of_a_pre_commit_gate_leaves_no_placeholder_in_the_commit(
    bwrap_orch: Any, origin: Path, tmp_path: Path
) -> None:
    # lint runs before the orchestrator commits: the mount point bwrap creates for the base
    # version of a deleted file must not end up in the agent's commit
    push_files(
        origin, tmp_path,
        {
            ".mosaic/gates.toml": '[gates]\ntypecheck = false\nlint = "sh ci/lint.sh"\n'
                                  'tests = "true"\ncoverage = false\n',
            "ci/lint.sh": "test -f app.txt\n",
            "app.txt": "good\n",
        },
    )  # fmt: skip
    data = await run_agent(bwrap_orch, origin, "T-rm", "rm -r ci; echo removed ci; echo done")
    assert data["status"] == "completed", data
    lint = gates_of(data)["lint"]
    assert lint["status"] == "passed" and lint["phase"] == "pre"
    assert lint["notes"] == ["ci/lint.sh was deleted by the agent; the gate ran its base version"]
    tree = git("--git-dir", str(origin), "ls-tree", "-r", "--name-only", "mosaic/worker/T-rm")
    assert tree.split() == [".mosaic/gates.toml", "README.md", "app.txt"]
