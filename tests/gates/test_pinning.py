"""Files a gate command runs are shown at their base version; what the agent changed is reported.

The binding itself is the sandbox's (real bwrap: tests/e2e/test_gate_integrity.py); here, which
files count, what is staged, what the executor is asked, and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.gates import CommandResult, GateStatus, LocalGateRunner, SubprocessExecutor
from core.gates.command_files import files_run_by, make_recipes
from core.gates.models import Overlay, OverlayUnsupported
from core.gates.pinning import PinError, prepare, release
from core.gates.tree import CommitTree
from core.run import SandboxExecutor
from sandbox import SandboxSpec
from sandbox.none import NoneSandbox
from tests.gates.conftest import commit_all, git

MAKEFILE = """\
.PHONY: test lint
SHELL := /bin/sh

test: unit
\t@sh ci/test.sh --fast
\t-python3 tools/report.py

unit:
\t./scripts/unit

lint: ; ruff check .
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    files = {
        "ci/test.sh": '#!/bin/sh\ntest "$(cat app.txt)" = good\n',
        "ci/env.sh": "export X=1\n",
        "scripts/unit": "#!/bin/sh\nexit 0\n",
        "scripts/lint": "#!/bin/sh\nexit 0\n",
        "tools/report.py": "print('report')\n",
        "tools/check.py": "print('check')\n",
        "Makefile": MAKEFILE,
        "package.json": json.dumps(
            {"scripts": {"pretest": "node tools/pre.js", "test": "sh ci/test.sh", "lint": "x"}}
        ),
        "tools/pre.js": "1\n",
        "tox.ini": "[tox]\n",
        "ci/pytest.ini": "[pytest]\n",
        "src/app.py": "x = 1\n",
        "tests/test_app.py": "def test_x(): pass\n",
        "app.txt": "good\n",
    }
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in ("ci/test.sh", "scripts/unit", "scripts/lint"):
        (repo / name).chmod(0o755)
    git(repo.parent, "init", "-q", "-b", "main", str(repo))
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    commit_all(repo, "base")
    return repo


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("sh ci/test.sh", ["ci/test.sh"]),
        ("./ci/test.sh && echo ok", ["ci/test.sh"]),
        ("FOO=1 timeout 60 bash -e ci/test.sh 2>/dev/null", ["ci/test.sh"]),
        ("env -i A=1 scripts/lint; true", ["scripts/lint"]),
        ("bash -c 'sh ci/test.sh || exit 1'", ["ci/test.sh"]),
        (". ci/env.sh && sh < ci/test.sh", ["ci/test.sh", "ci/env.sh"]),
        ("python3 -u tools/check.py src/app.py", ["tools/check.py"]),
        ("uv run python tools/check.py", ["tools/check.py"]),
        ("python3 -m pytest tests/test_app.py", []),
        ("pytest -q -c ci/pytest.ini tests/test_app.py", ["ci/pytest.ini"]),
        ("ruff check --config=ci/pytest.ini src/app.py", ["ci/pytest.ini"]),
        ("make test", ["Makefile", "ci/test.sh", "tools/report.py", "scripts/unit"]),
        ("make", ["Makefile", "ci/test.sh", "tools/report.py", "scripts/unit"]),
        ("make lint", ["Makefile"]),
        ("npm test", ["package.json", "tools/pre.js", "ci/test.sh"]),
        ("npm run lint --silent", ["package.json"]),
        ("yarn test", ["package.json", "tools/pre.js", "ci/test.sh"]),
        ("tox -e py", ["tox.ini"]),
        ("sh ci/missing.sh; sh /etc/profile; sh ../x.sh; sh $SCRIPT; sh src", []),
        ("sh 'unbalanced", []),
    ],
)
def test_files_a_command_runs(repo: Path, command: str, expected: list[str]) -> None:
    assert sorted(files_run_by(command, CommitTree(repo, "HEAD"))) == sorted(expected)


def test_make_recipes_follow_prerequisites() -> None:
    assert make_recipes(MAKEFILE, ["test"]) == [
        "sh ci/test.sh --fast",
        "python3 tools/report.py",
        "./scripts/unit",
    ]
    assert make_recipes(MAKEFILE, []) == make_recipes(MAKEFILE, ["test"])
    assert make_recipes(MAKEFILE, ["nope"]) == []


def test_unchanged_files_need_nothing(repo: Path) -> None:
    tree = CommitTree(repo, "HEAD")
    pinned = prepare(repo, tree, ["ci/test.sh", "Makefile"])
    assert pinned.overlays == [] and pinned.notes == [] and pinned.staging is None


def test_a_changed_file_is_staged_at_its_base_version_and_released(repo: Path) -> None:
    base = CommitTree(repo, "HEAD")
    (repo / "ci" / "test.sh").write_text("exit 0\n")  # mode kept: content differs
    (repo / "scripts" / "unit").chmod(0o644)  # content kept: the mode differs
    pinned = prepare(repo, base, ["ci/test.sh", "scripts/unit", "Makefile"])
    assert [dest for _src, dest in pinned.overlays] == [
        repo / "ci" / "test.sh",
        repo / "scripts" / "unit",
    ]
    staged = pinned.overlays[0][0]
    assert staged.read_text() == '#!/bin/sh\ntest "$(cat app.txt)" = good\n'
    assert staged.stat().st_mode & 0o777 == 0o755 and staged.parent.stat().st_mode & 0o777 == 0o755
    assert pinned.notes == [
        "ci/test.sh was changed by the agent; the gate ran its base version",
        "scripts/unit was changed by the agent; the gate ran its base version",
    ]
    release(pinned, repo)
    assert not staged.exists() and not staged.parent.exists()
    assert (repo / "ci" / "test.sh").read_text() == "exit 0\n"  # the agent's change stays


def test_a_deleted_file_leaves_no_placeholder_behind(repo: Path) -> None:
    base = CommitTree(repo, "HEAD")
    shutil.rmtree(repo / "ci")
    (repo / "scripts" / "unit").unlink()
    pinned = prepare(repo, base, ["ci/test.sh", "scripts/unit"])
    assert pinned.notes == [
        "ci/test.sh was deleted by the agent; the gate ran its base version",
        "scripts/unit was deleted by the agent; the gate ran its base version",
    ]
    # what bwrap does for a missing mount point: it creates the directories and an empty file
    (repo / "ci").mkdir()
    (repo / "ci" / "test.sh").touch()
    (repo / "scripts" / "unit").touch()
    (repo / "scripts" / "other").write_text("made by the gate command\n")
    release(pinned, repo)
    assert not (repo / "ci").exists() and not (repo / "scripts" / "unit").exists()
    assert (repo / "scripts" / "other").exists()  # not ours: kept


def test_a_placeholder_with_content_is_not_removed(repo: Path) -> None:
    base = CommitTree(repo, "HEAD")
    (repo / "scripts" / "unit").unlink()
    pinned = prepare(repo, base, ["scripts/unit"])
    (repo / "scripts" / "unit").write_text("written later\n")
    release(pinned, repo)
    assert (repo / "scripts" / "unit").read_text() == "written later\n"


def test_links_planted_over_or_above_a_file_refuse_the_gate(repo: Path, tmp_path: Path) -> None:
    base = CommitTree(repo, "HEAD")
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "ci" / "test.sh").unlink()
    (repo / "ci" / "test.sh").symlink_to(outside / "x.sh")
    with pytest.raises(PinError, match=r"ci/test\.sh was replaced by the agent"):
        prepare(repo, base, ["ci/test.sh"])
    (repo / "scripts" / "unit").unlink()
    (repo / "scripts" / "lint").unlink()
    os.rmdir(repo / "scripts")
    (repo / "scripts").symlink_to(outside)
    with pytest.raises(PinError, match="scripts is a symbolic link in the worktree"):
        prepare(repo, base, ["Makefile", "scripts/unit"])
    assert list(outside.iterdir()) == []


@dataclass
class Recording:
    """An executor that records what it is asked and what the staged files hold meanwhile."""

    calls: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    exit_code: int = 0

    async def __call__(
        self, command: str, *, cwd: Path, timeout_s: float, overlays: Any = ()
    ) -> CommandResult:
        seen = [(str(dest.relative_to(cwd)), src.read_text()) for src, dest in overlays]
        self.calls.append((command, seen))
        return CommandResult(self.exit_code, "ran", False, 0.01)


def staged_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mosaic-gate-base-*"))


async def test_the_runner_runs_the_base_version_and_reports_the_change(
    repo: Path, make_ctx: Any, recorder: Any
) -> None:
    before = staged_dirs()
    (repo / ".mosaic").mkdir()
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\ntests = "sh ci/test.sh"\n')
    base = commit_all(repo, "gates")
    (repo / "ci" / "test.sh").write_text("exit 0\n")
    head = commit_all(repo, "agent: make the tests pass")
    executor = Recording()
    ctx = make_ctx(repo, "minimal", base_sha=base, commit=head, executor=executor)
    [tests] = await LocalGateRunner().run(ctx, "post")
    assert executor.calls == [
        ("sh ci/test.sh", [("ci/test.sh", '#!/bin/sh\ntest "$(cat app.txt)" = good\n')])
    ]
    note = "ci/test.sh was changed by the agent; the gate ran its base version"
    assert tests.status is GateStatus.PASSED and tests.notes == [note]
    assert tests.reason == note
    assert tests.model_dump(mode="json")["notes"] == [note]
    finished = recorder.events[-1][1]
    assert finished["notes"] == [note] and finished["reason"] == note
    executor.exit_code = 1
    [failed] = await LocalGateRunner().run(ctx, "post")
    assert failed.status is GateStatus.FAILED
    assert failed.reason == f"`sh ci/test.sh` exited with 1; {note}"
    # without a base there is nothing to pin against: the worktree's files run, nothing noted
    [no_base] = await LocalGateRunner().run(make_ctx(repo, "minimal", executor=Recording()), "post")
    assert no_base.notes == []
    assert staged_dirs() == before  # every staged copy deleted after its gate


async def test_an_executor_without_a_sandbox_refuses_and_the_gate_errors(
    repo: Path, make_ctx: Any, tool_env: dict[str, str]
) -> None:
    (repo / ".mosaic").mkdir()
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\ntests = "sh ci/test.sh"\n')
    base = commit_all(repo, "gates")
    (repo / "ci" / "test.sh").write_text("exit 0\n")
    ctx = make_ctx(repo, "minimal", base_sha=base, executor=SubprocessExecutor(env=tool_env))
    [tests] = await LocalGateRunner().run(ctx, "post")
    assert tests.status is GateStatus.ERROR and tests.blocking
    assert "no sandbox to show the base version of" in (tests.reason or "")
    assert tests.notes == ["ci/test.sh was changed by the agent; the gate ran its base version"]


@dataclass
class SpecRecorder:
    name: str = "bwrap"
    specs: list[SandboxSpec] = field(default_factory=list)

    async def start(self, spec: SandboxSpec) -> Any:
        self.specs.append(spec)
        raise RuntimeError("recorded")


async def test_the_sandbox_executor_adds_overlays_to_the_gates_spec(tmp_path: Path) -> None:
    template = SandboxSpec(
        agent_id="a1", argv=["true"], workdir=tmp_path, env={}, log_dir=tmp_path / "logs"
    )
    src = tmp_path / "base.sh"
    src.write_text("exit 1\n")
    overlay: Overlay = (src, tmp_path / "ci" / "test.sh")
    fake = SpecRecorder()
    executor = SandboxExecutor(fake, template, tmp_path / "logs")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="recorded"):
        await executor("sh ci/test.sh", cwd=tmp_path, timeout_s=5, overlays=[overlay])
    assert fake.specs[0].overlays == (overlay,)
    with pytest.raises(RuntimeError, match="recorded"):
        await executor("true", cwd=tmp_path, timeout_s=5)
    assert fake.specs[1].overlays == ()
    none = SandboxExecutor(NoneSandbox(), template, tmp_path / "logs")
    with pytest.raises(OverlayUnsupported, match="backend 'none' cannot show the base version"):
        await none("sh ci/test.sh", cwd=tmp_path, timeout_s=5, overlays=[overlay])


async def test_a_cancelled_gate_leaves_no_staged_copy(repo: Path, make_ctx: Any) -> None:
    (repo / ".mosaic").mkdir()
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\ntests = "sh ci/test.sh"\n')
    base = commit_all(repo, "gates")
    (repo / "ci" / "test.sh").unlink()
    before = staged_dirs()
    started = asyncio.Event()

    async def hang(command: str, *, cwd: Path, timeout_s: float, overlays: Any = ()) -> Any:
        assert [src.exists() for src, _dest in overlays] == [True]
        (cwd / "ci" / "test.sh").touch()  # the mount point a sandbox would create
        started.set()
        await asyncio.sleep(60)

    ctx = make_ctx(repo, "minimal", base_sha=base, executor=hang)
    run = asyncio.create_task(LocalGateRunner().run(ctx, "post"))
    await asyncio.wait_for(started.wait(), 10)
    assert len(staged_dirs() - before) == 1
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert staged_dirs() == before
    assert not (repo / "ci" / "test.sh").exists()
