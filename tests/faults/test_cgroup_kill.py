"""A cgroup kill empties the cgroup whatever its processes do (real cgroups, no sandbox).

Inside a sandbox one SIGKILL pass is enough (the PID namespace dies with its init); these
processes have no PID namespace, so the kill must notice what appears after its first pass, or a
cgroup left frozen, and fall back to freezing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from sandbox.cgroups import AgentCgroup, CgroupManager, KillProgress, Limits
from sandbox.launcher import enter_cgroup_argv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")


@pytest.fixture
def manager() -> Iterator[CgroupManager]:
    m = CgroupManager(f"mosaic-test-{uuid.uuid4().hex[:8]}/kill")
    if (problem := m.usable()) is not None:
        pytest.skip(f"cgroups not usable: {problem}")
    try:
        yield m
    finally:
        m.remove_parent()


def start(cg: AgentCgroup, script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(enter_cgroup_argv(cg.entry_files(), ["/bin/sh", "-c", script]))


def wait_for(cg: AgentCgroup, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(cg.pids()) < count:
        assert time.monotonic() < deadline, f"only {len(cg.pids())} processes"
        time.sleep(0.01)


def test_a_fork_loop_without_a_pid_namespace_is_killed(manager: CgroupManager) -> None:
    cg = manager.agent("forker")
    cg.create(Limits(memory_mb=64, cpu_quota=None, pids_max=64))
    proc = start(cg, "while :; do (sleep 300 &) 2>/dev/null; done")
    try:
        wait_for(cg, 20)
        assert cg.kill(timeout_s=10)
        assert cg.pids() == []
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert cg.remove(timeout_s=5) and not cg.exists()


def test_a_cgroup_left_frozen_is_thawed_and_killed(manager: CgroupManager) -> None:
    freezer = manager.layout.v1_mounts.get("freezer")
    if manager.layout.version != 1 or freezer is None:
        pytest.skip("the v1 freezer is not mounted")
    cg = manager.agent("frozen")
    cg.create(Limits(memory_mb=64, cpu_quota=None, pids_max=16))
    proc = start(cg, "sleep 300 & exec sleep 300")
    try:
        wait_for(cg, 2)
        state = freezer / manager.parent / "frozen" / "freezer.state"
        state.write_text("FROZEN")
        assert cg.kill(timeout_s=10)
        assert cg.pids() == []
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert state.read_text().strip() == "THAWED"
    finally:
        proc.kill()
        proc.wait()
    assert cg.remove(timeout_s=5) and not cg.exists()


def test_passes_signal_once_and_then_only_wait(manager: CgroupManager) -> None:
    """The first pass signals everything listed; later ones report when the cgroup is empty."""
    cg = manager.agent("quiet")
    cg.create(Limits(memory_mb=64, cpu_quota=None, pids_max=16))
    proc = start(cg, "sleep 300 & exec sleep 300")
    try:
        wait_for(cg, 2)
        listed = set(cg.pids())
        progress = KillProgress(time.monotonic() + 10)
        assert cg.kill_pass(progress) is False
        assert progress.signalled == listed
        deadline = time.monotonic() + 10
        while not cg.kill_pass(progress):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert cg.remove(timeout_s=5)
