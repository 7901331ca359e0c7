"""Agent cgroups on the real cgroupfs of this machine (v1 here and on CI; v2 code via layout)."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from sandbox.base import SandboxError
from sandbox.cgroups import CgroupLayout, CgroupManager, Limits, detect_layout
from sandbox.launcher import enter_cgroup_argv

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / {unified} rw,relatime - cgroup2 cgroup2 rw
garbage line
"""


def test_detect_layout_reads_v1_mounts_including_co_mounted_controllers(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    mi = tmp_path / "mountinfo"
    mi.write_text(HYBRID.format(unified=unified))
    layout = detect_layout(mi)
    assert layout.version == 1
    assert (
        layout.v1_mounts["cpu"] == layout.v1_mounts["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    )
    assert len(layout.hierarchies) == 4


def test_detect_layout_prefers_v2_with_memory_and_pids(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mi = tmp_path / "mountinfo"
    mi.write_text(f"30 1 0:26 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    layout = detect_layout(mi)
    assert layout.version == 2 and layout.hierarchies == [tmp_path]


def test_detect_layout_without_cgroups(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text("1 0 8:1 / / rw - ext4 /dev/sda rw\n")
    assert detect_layout(mi).version == 0
    assert detect_layout(tmp_path / "missing").version == 0
    manager = CgroupManager("x", detect_layout(mi))
    assert "no cgroup hierarchy" in (manager.usable() or "")


@pytest.mark.parametrize("parent", ["", "/abs", "a/../b", "."])
def test_bad_parent_names_are_refused(parent: str) -> None:
    with pytest.raises(SandboxError, match="cgroup parent"):
        CgroupManager(parent)


def test_unwritable_hierarchy_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    layout = CgroupLayout(version=1, v1_mounts={"memory": blocker})
    assert "not writable" in (CgroupManager("p", layout).usable() or "")


def test_v2_limits_are_written_to_the_v2_files(tmp_path: Path) -> None:
    """The v2 code path against a directory tree shaped like cgroupfs (no v2 on this host)."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids")
    (tmp_path / "cgroup.subtree_control").write_text("")
    manager = CgroupManager("mosaic", CgroupLayout(version=2, v2_root=tmp_path))
    assert manager.usable() is None
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    cg = manager.agent("a1")
    (tmp_path / "mosaic" / "a1").mkdir()
    for name in ("memory.swap.max", "cpu.max", "cgroup.procs"):
        (tmp_path / "mosaic" / "a1" / name).write_text("")
    cg.create(Limits(memory_mb=64, cpu_quota=0.5, pids_max=32))
    d = tmp_path / "mosaic" / "a1"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == "32"
    assert (d / "cpu.max").read_text() == "50000 100000"
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 1\n")
    (d / "memory.current").write_text("4096\n")
    (d / "pids.current").write_text("3\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    stats = cg.stats()
    assert (stats.cpu_seconds, stats.memory_bytes, stats.pids, stats.oom_killed) == (
        2.5,
        4096,
        3,
        True,
    )
    assert manager.list_agents() == ["a1"]


@pytest.fixture
def manager(cgroup_parent: str, needs_cgroups: None) -> CgroupManager:
    m = CgroupManager(f"{cgroup_parent}/unit-{uuid.uuid4().hex[:6]}")
    assert m.usable() is None
    return m


def test_limits_stats_kill_and_remove_on_real_cgroups(manager: CgroupManager) -> None:
    cg = manager.agent("agent-1")
    cg.create(Limits(memory_mb=64, cpu_quota=0.5, pids_max=16))
    assert cg.exists() and manager.list_agents() == ["agent-1"]
    layout = manager.layout
    if layout.version == 1:
        mem = layout.v1_mounts["memory"] / manager.parent / "agent-1"
        assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        pids = layout.v1_mounts["pids"] / manager.parent / "agent-1"
        assert (pids / "pids.max").read_text().strip() == "16"
    # A process that enters the cgroup before exec, plus a child that double-forks away.
    script = "sleep 300 & (sleep 300 &) ; exec sleep 300"
    proc = subprocess.Popen(enter_cgroup_argv(cg.procs_files(), ["/bin/sh", "-c", script]))
    try:
        for _ in range(200):
            if len(cg.pids()) >= 3:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert len(cg.pids()) >= 3
        assert proc.pid in cg.pids()
        stats = cg.stats()
        assert stats.pids >= 3 and stats.memory_bytes > 0 and not stats.oom_killed
        cg.signal_all(signal.SIGCONT)
        assert cg.kill(timeout_s=5.0)
        assert cg.pids() == []
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert cg.remove()
    assert not cg.exists() and manager.list_agents() == []
    assert cg.remove()  # idempotent
    manager.remove_parent()


def test_create_failure_is_a_sandbox_error_and_leaves_nothing(manager: CgroupManager) -> None:
    cg = manager.agent("agent-bad")
    with pytest.raises(SandboxError, match="cannot set up cgroup"):
        cg.create(Limits(memory_mb=1 << 40, cpu_quota=1.0, pids_max=-5))
    assert not cg.exists()
