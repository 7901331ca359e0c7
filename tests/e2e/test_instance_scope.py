"""Instances on one host never touch each other's agents (real engines, cgroups and processes).

Each instance's sandboxes live in ``<SANDBOX_CGROUP_PARENT>/<instance slug>``; start-up
reconciliation reaps leftovers in that scope only, and shutdown removes the (empty) scope.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis

from core.instance import sandbox_scope
from sandbox.cgroups import AgentCgroup, CgroupManager, Limits
from tests.spine.conftest import make_settings, running


@pytest.fixture
def top() -> Iterator[str]:
    """A top cgroup parent shared by the test's instances; removed with all in it at the end."""
    parent = f"mosaic-test-{uuid.uuid4().hex[:8]}"
    problem = CgroupManager(parent).usable()
    try:
        if problem is not None:
            pytest.skip(f"cgroups not writable here: {problem}")
        yield parent
    finally:
        CgroupManager(parent).remove_parent()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _dirs(parent: str) -> list[Path]:
    return [h / parent for h in CgroupManager(parent).layout.hierarchies]


def _sleep_in(cgroup: AgentCgroup) -> subprocess.Popen[bytes]:
    """A real process (``sleep 30``, so bounded) inside ``cgroup``, created for it."""
    cgroup.create(Limits(memory_mb=64, cpu_quota=None, pids_max=16))
    proc = subprocess.Popen(["sleep", "30"])
    for procs in cgroup.procs_files():
        procs.write_text(str(proc.pid))
    assert cgroup.pids() == [proc.pid]
    return proc


async def test_two_instances_on_one_host_leave_each_others_agents_alone(
    tmp_path: Path, origin: Path, valkey_url: str, redis_client: aioredis.Redis, top: str
) -> None:
    common = {
        "sandbox_backend": "bwrap",
        "sandbox_cgroup_parent": top,
        "mosaic_agent_command": "sleep 30",
        "agent_stuck_s": 120,
    }
    a_settings = make_settings(tmp_path / "a", valkey_url, instance_name="host:a1a1a1a1", **common)
    # B has its own state dir and its own (embedded) Valkey, which never heard of A's agent
    b_settings = make_settings(tmp_path / "b", "", instance_name="host:b2b2b2b2", **common)
    a_scope = sandbox_scope(a_settings, "host:a1a1a1a1")
    b_scope = sandbox_scope(b_settings, "host:b2b2b2b2")
    assert a_scope != b_scope and a_scope.startswith(f"{top}/i-host-a1a1a1a1-")
    async with running(a_settings) as a:
        agent_id = await a.spawn("T-scoped", origin)
        await a.wait_status(agent_id, "running")
        cgroup = CgroupManager(a_scope).agent(agent_id)
        pids: list[int] = []
        async with asyncio.timeout(10):  # the launcher enters the cgroup right after it starts
            while not (pids := cgroup.pids()):
                await asyncio.sleep(0.02)
        async with running(b_settings) as b:  # B's start-up reconciliation has run
            assert b.engine.instance == "host:b2b2b2b2"
            assert await b.engine.store.find_agent(agent_id) is None
            assert all(d.is_dir() for d in _dirs(b_scope))
        assert not any(d.exists() for d in _dirs(b_scope))  # B removed its own scope, only it
        assert cgroup.exists() and set(pids) <= set(cgroup.pids())
        assert all(_alive(pid) for pid in pids)
        _, status = await a.get(f"/agents/{agent_id}/status")
        assert status["status"] == "running"
    # A's shutdown killed its agent and removed its scope (the shared top stays)
    assert not any(_alive(pid) for pid in pids)
    assert not any(d.exists() for d in _dirs(a_scope))
    assert all(d.is_dir() for d in _dirs(top))


async def test_reconciliation_reaps_its_own_orphans_and_no_one_elses(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, top: str
) -> None:
    settings = make_settings(
        tmp_path, valkey_url, sandbox_backend="bwrap", sandbox_cgroup_parent=top,
        instance_name="host:own",
    )  # fmt: skip
    own = CgroupManager(sandbox_scope(settings, "host:own"))
    other = CgroupManager(sandbox_scope(settings, "host:other"))
    legacy = CgroupManager(top)  # an agent of an orchestrator from before scopes: owner unknown
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for manager in (own, other):
            assert manager.usable() is None
        lost = _sleep_in(own.agent("lost-agent"))
        procs.append(lost)
        foreign = _sleep_in(other.agent("foreign-agent"))
        procs.append(foreign)
        old = _sleep_in(legacy.agent("legacy-agent"))
        procs.append(old)
        async with running(settings):
            assert lost.wait(timeout=5) == -signal.SIGKILL
            assert not own.agent("lost-agent").exists() and own.list_agents() == []
            assert foreign.poll() is None and other.agent("foreign-agent").pids() == [foreign.pid]
            assert old.poll() is None and legacy.agent("legacy-agent").pids() == [old.pid]
        assert not any(d.exists() for d in _dirs(own.parent))
        assert other.list_agents() == ["foreign-agent"] and foreign.poll() is None
        assert all(d.is_dir() for d in _dirs(top))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=5)
        for manager in (own, other):
            manager.remove_parent()
