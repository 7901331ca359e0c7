"""Measuring an agent's disk use: its worktree (walked without following anything), its private
tmpfs mounts (read through /proc/<pid>/root), and the budget's verdict."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from core.diskusage import (
    DiskBudget,
    private_tmpfs_used,
    sandbox_namespaces,
    tmpfs_used,
    tree_usage,
)
from core.safeio import MiB


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_tree_usage_counts_files_and_never_follows_links(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "big.bin").write_bytes(b"h" * (8 * MiB))
    work = tmp_path / "work"
    (work / "a" / "b").mkdir(parents=True)
    (work / "a" / "b" / "data.bin").write_bytes(b"w" * (2 * MiB))
    (work / "linked-dir").symlink_to(host)
    (work / "linked-file").symlink_to(host / "big.bin")
    open_before = fds()
    usage = tree_usage(work)
    assert fds() == open_before
    assert 2 * MiB <= usage.bytes < 3 * MiB  # the host's 8 MiB are not counted
    assert usage.entries == 5 and usage.unmeasured == 0 and not usage.stopped
    assert tree_usage(tmp_path / "missing").bytes == 0


def test_sparse_files_are_charged_their_size(tmp_path: Path) -> None:
    with (tmp_path / "sparse").open("wb") as fh:
        fh.truncate(1024 * MiB)
    assert tree_usage(tmp_path).bytes >= 1024 * MiB


def test_walk_stops_past_its_limit_and_reports_what_it_cannot_enter(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"f{i}").write_bytes(b"x" * MiB)
    usage = tree_usage(tmp_path, stop_above=3 * MiB)
    assert usage.stopped and 3 * MiB < usage.bytes < 5 * MiB
    deep = tmp_path / "deep"
    level = deep
    for i in range(6):
        level = level / f"d{i}"
    level.mkdir(parents=True)
    (level / "hidden.bin").write_bytes(b"x" * MiB)
    usage = tree_usage(deep, max_depth=3)
    assert usage.unmeasured == 1 and usage.bytes < MiB


def test_a_directory_the_orchestrator_cannot_enter_is_reported(tmp_path: Path) -> None:
    """An agent running as the orchestrator's own uid may ``chmod 000`` a directory to hide
    what it holds: the walk reports it rather than counting it empty."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to walk as an unprivileged user")
    top = Path(tempfile.mkdtemp(prefix="mosaic-walk-"))
    try:
        top.chmod(0o755)
        (top / "hidden").mkdir()
        (top / "hidden" / "data.bin").write_bytes(b"x" * MiB)
        (top / "hidden").chmod(0o000)
        probe = (
            "import sys; from core.diskusage import tree_usage; "
            "u = tree_usage(sys.argv[1]); print(u.unmeasured, u.bytes < 1024 * 1024)"
        )
        out = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", probe, str(top)],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.split() == ["1", "True"]
    finally:
        (top / "hidden").chmod(0o700)
        shutil.rmtree(top)


def test_tmpfs_usage_is_read_through_the_process_root() -> None:
    """/dev/shm is a tmpfs; read it the way the monitor reads a sandbox's /tmp."""
    if " /dev/shm tmpfs " not in Path("/proc/self/mounts").read_text():
        pytest.skip("no tmpfs at /dev/shm")
    path = Path("/dev/shm") / f"mosaic-test-{uuid.uuid4().hex}"
    before = tmpfs_used(os.getpid(), "/dev/shm")
    try:
        path.write_bytes(b"t" * (3 * MiB))
        grown = tmpfs_used(os.getpid(), "/dev/shm") - before
    finally:
        path.unlink()
    assert 3 * MiB <= grown < 4 * MiB
    assert tmpfs_used(os.getpid(), "/nowhere") == 0
    # our own mounts are nobody's private tmpfs, and we are no sandbox
    assert private_tmpfs_used([os.getpid()]) == 0
    assert sandbox_namespaces(os.getpid()) == []


def test_a_sandbox_private_tmpfs_is_found_below_its_launcher(tmp_path: Path) -> None:
    """A child in its own mount namespace with its own tmpfs (what bwrap builds for /tmp)."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if os.geteuid() != 0 or unshare is None or mount is None:
        pytest.skip("needs root and util-linux to make a mount namespace")
    point = tmp_path / "tmp"
    point.mkdir()
    script = (
        f"mount -t tmpfs -o size=16m tmpfs {point} && head -c 3M /dev/zero > {point}/x "
        "&& echo ready && sleep 30"
    )
    launcher = subprocess.Popen(  # a launcher process, like bwrap's outer one
        ["sh", "-c", f"{unshare} --mount --propagation private sh -c '{script}'; true"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert launcher.stdout is not None and launcher.stdout.readline() == b"ready\n"
        inner = sandbox_namespaces(launcher.pid)
        assert len(inner) == 1 and inner[0] != launcher.pid
        assert 3 * MiB <= private_tmpfs_used(inner) < 4 * MiB
        assert tmpfs_used(launcher.pid, str(point)) == 0  # the host does not see that mount
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's own group: all of it
        launcher.wait()


async def test_budget_counts_growth_since_the_start(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "checkout.bin").write_bytes(b"c" * (6 * MiB))  # the repository: not the agent's
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    budget = DiskBudget(4, work, tree_usage(work), private_dirs=[io_dir], min_interval=0.0)

    await budget.refresh()
    assert budget.verdict(0) is None and budget.stored == 0
    (work / "new.bin").write_bytes(b"n" * (2 * MiB))
    (io_dir / "transcript.jsonl").write_bytes(b"t" * MiB)
    await budget.refresh()
    assert budget.verdict(0) is None and 3 * MiB <= budget.stored < 4 * MiB
    # the sandbox's tmpfs counts too
    assert budget.verdict(2 * MiB) == "sandbox: disk budget of 4 MB exceeded (5 MB used)"
    # the monitor's way: poll (never waits) until a background walk has seen the growth
    (work / "more.bin").write_bytes(b"m" * (2 * MiB))
    deadline = time.monotonic() + 10
    while (failure := budget.verdict(0)) is None and time.monotonic() < deadline:
        budget.poll()
        await asyncio.sleep(0.02)
    budget.close()
    assert failure is not None and failure.startswith("sandbox: disk budget of 4 MB exceeded")
