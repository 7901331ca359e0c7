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
    proc = subprocess.Popen(enter_cgroup_argv(cg.entry_files(), ["/bin/sh", "-c", script]))
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


def test_v2_nested_parent_enables_controllers_at_every_level(tmp_path: Path) -> None:
    """An instance's parent ``<top>/<slug>``: each level delegates the controllers downwards."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids")
    for d in (tmp_path, tmp_path / "mosaic", tmp_path / "mosaic" / "i-a"):
        d.mkdir(exist_ok=True)
        (d / "cgroup.subtree_control").write_text("")
    (tmp_path / "mosaic" / "cgroup.subtree_control").write_text("memory")
    layout = CgroupLayout(version=2, v2_root=tmp_path)
    manager = CgroupManager("mosaic/i-a", layout)
    assert manager.usable() is None
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (tmp_path / "mosaic" / "cgroup.subtree_control").read_text() == "+pids +cpu"
    assert (tmp_path / "mosaic" / "i-a" / "cgroup.subtree_control").read_text() == (
        "+memory +pids +cpu"
    )
    (tmp_path / "mosaic" / "i-a" / "agent-1").mkdir()
    (tmp_path / "mosaic" / "i-b" / "agent-2").mkdir(parents=True)
    assert manager.list_agents() == ["agent-1"]
    assert CgroupManager("mosaic/i-b", layout).list_agents() == ["agent-2"]


def test_release_removes_only_empty_parents_and_kills_nothing(
    cgroup_parent: str, needs_cgroups: None
) -> None:
    """Shutdown of an instance: its empty scope goes, a scope with a live agent stays."""
    top = f"{cgroup_parent}/top-{uuid.uuid4().hex[:6]}"
    mine, other = CgroupManager(f"{top}/i-mine"), CgroupManager(f"{top}/i-other")
    assert mine.usable() is None and other.usable() is None
    cg = other.agent("agent-1")
    cg.create(Limits(memory_mb=64, cpu_quota=None, pids_max=16))
    proc = subprocess.Popen(enter_cgroup_argv(cg.entry_files(), ["sleep", "30"]))
    try:
        for _ in range(250):
            if cg.pids():
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert cg.pids() == [proc.pid]
        assert mine.release()
        assert not any((h / mine.parent).exists() for h in mine.layout.hierarchies)
        assert all((h / top).is_dir() for h in mine.layout.hierarchies)  # the other's is in it
        assert not other.release()  # an agent cgroup is left in it: kept, and so is the agent
        assert proc.poll() is None and cg.pids() == [proc.pid]
        assert cg.remove()
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert other.release()
        assert not any((h / other.parent).exists() for h in other.layout.hierarchies)
        assert all((h / top).is_dir() for h in other.layout.hierarchies)  # ancestors stay
    finally:
        proc.kill()
        proc.wait(timeout=5)
        CgroupManager(top).remove_parent()
