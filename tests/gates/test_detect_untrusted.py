"""Detection and the repository's gate config read the agent's worktree without trusting it:
no symbolic link followed, no FIFO waited on, no build file loaded whole when it is huge."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import pytest

from core.gates import GateConfigError
from core.gates.detect import BUILD_FILE_MAX, ProjectFacts, plan_detected, scan_project
from core.gates.repo_config import load_repo_config
from core.safeio import MiB

ALL_TOOLS = {"ruff", "mypy", "pytest", "npm", "make", "python3"}


@pytest.fixture
def host_files(tmp_path: Path) -> Path:
    """Host files an agent would like the orchestrator to read for it."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\n[tool.ruff]\nline-length = 1\n'
    )
    (host / "package.json").write_text(json.dumps({"scripts": {"test": "steal"}}))
    (host / "Makefile").write_text("test:\n\tsteal\n")
    (host / "gates.toml").write_text('[gates]\ntests = "steal"\n')
    return host


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])  # type: ignore[index]


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS here: {exc}")


def scan_in_thread(root: Path, timeout: float = 10.0) -> ProjectFacts:
    box: list[ProjectFacts] = []
    thread = threading.Thread(target=lambda: box.append(scan_project(root)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "detection blocked"
    return box[0]


def test_symlinked_build_files_are_not_followed(worktree: Path, host_files: Path) -> None:
    for name in ("pyproject.toml", "package.json", "Makefile", "setup.cfg"):
        (worktree / name).symlink_to(host_files / name)
    facts = scan_project(worktree)
    assert facts.pyproject == {} and facts.ruff_config is None
    assert facts.node_scripts is None and facts.make_targets == set()
    assert not facts.python  # a link is not a Python project's build file
    assert "pyproject.toml ignored: a symbolic link (not followed)" in facts.problems
    assert "package.json ignored: a symbolic link (not followed)" in facts.problems
    tests = plan_detected("tests", facts, ALL_TOOLS)
    assert tests.command is None and tests.skip_reason is not None
    assert "symbolic link" in tests.skip_reason and "steal" not in tests.skip_reason


def test_huge_build_files_are_refused_without_growing_memory(worktree: Path) -> None:
    with (worktree / "pyproject.toml").open("wb") as fh:
        fh.truncate(256 * MiB)  # sparse: costs no disk, would cost 256 MiB (x2) to read
    with (worktree / "package.json").open("wb") as fh:  # a real one, 48 MiB of JSON
        fh.write(b'{"scripts": {"test": "pytest"}, "pad": "')
        chunk = b"x" * MiB
        for _ in range(48):
            fh.write(chunk)
        fh.write(b'"}')
    (worktree / "Makefile").write_bytes(b"test:\n\ttrue\n" + b"# pad\n" * (BUILD_FILE_MAX // 6))
    reset_peak_rss()
    before = peak_rss_kib()
    facts = scan_project(worktree)
    after = peak_rss_kib()
    print(f"VmHWM before={before} kB after={after} kB growth={after - before} kB")
    assert after - before < 50 * 1024
    assert "pyproject.toml ignored: larger than 1 MiB" in facts.problems
    assert "package.json ignored: larger than 1 MiB" in facts.problems
    assert "Makefile ignored: larger than 1 MiB" in facts.problems
    assert facts.pyproject == {} and facts.node_scripts is None and not facts.make_targets
    assert facts.python  # the file is there; only its content was not read


def test_fifo_build_files_do_not_hang_detection(worktree: Path) -> None:
    for name in ("pyproject.toml", "package.json", "Makefile", "setup.cfg", "mypy.ini"):
        os.mkfifo(worktree / name)
    facts = scan_in_thread(worktree)
    assert "pyproject.toml ignored: a FIFO, not a regular file" in facts.problems
    assert not facts.python and facts.node_scripts is None


def test_deeply_nested_build_files_are_problems_not_crashes(worktree: Path) -> None:
    (worktree / "package.json").write_text("[" * 200_000)
    (worktree / "pyproject.toml").write_text("x = " + "[" * 200_000)
    facts = scan_project(worktree)
    assert any(p.startswith("package.json unreadable") for p in facts.problems)
    assert any(p.startswith("pyproject.toml unreadable") for p in facts.problems)


def test_repo_gate_config_is_not_read_through_links(worktree: Path, host_files: Path) -> None:
    (worktree / ".mosaic").mkdir()
    (worktree / ".mosaic" / "gates.toml").symlink_to(host_files / "gates.toml")
    with pytest.raises(GateConfigError, match="symbolic link"):
        load_repo_config(worktree)
    (worktree / ".mosaic" / "gates.toml").unlink()
    (worktree / ".mosaic").rmdir()
    (worktree / ".mosaic").symlink_to(host_files)  # a linked directory on the way
    with pytest.raises(GateConfigError, match=r"\.mosaic is a symbolic link"):
        load_repo_config(worktree)


def test_repo_gate_config_fifo_and_huge_file_are_errors(worktree: Path) -> None:
    (worktree / ".mosaic").mkdir()
    os.mkfifo(worktree / ".mosaic" / "gates.toml")
    box: list[BaseException] = []

    def load() -> None:
        try:
            load_repo_config(worktree)
        except GateConfigError as exc:
            box.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and "FIFO" in str(box[0])
    (worktree / ".mosaic" / "gates.toml").unlink()
    with (worktree / ".mosaic" / "gates.toml").open("wb") as fh:
        fh.truncate(64 * MiB)
    with pytest.raises(GateConfigError, match="larger than 1 MiB"):
        load_repo_config(worktree)
