"""Kill-all is an emergency stop: every live agent, in parallel, at once (SPEC §12, §19).

Real engine, real bwrap sandboxes, real cgroups. When kill-all answers, the agents are ``killed``
and nothing of them runs any more: no cgroup, no process of the sandbox user that belongs to them.
Their worktrees go afterwards (each run keeps the agent's work first). Speed is the benchmark's
business (bench/bench_killall.py); these tests only assert what is left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.instance import sandbox_scope
from core.models import AgentStatus, SpawnRequest
from sandbox.cgroups import CgroupManager
from tests.faults.procs import agent_processes, alive
from tests.spine.conftest import Orchestrator, make_settings, running

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="agents run as the sandbox user: needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
    pytest.mark.skipif(
        CgroupManager(f"mosaic-probe-{uuid.uuid4().hex[:8]}").layout.version == 0,
        reason="no cgroups",
    ),
]

IGNORES_TERM = 'trap "" TERM; exec sleep 300'  # sleep inherits the ignored TERM


def bwrap_settings(tmp_path: Path, valkey_url: str, parent: str, n: int, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "sandbox_backend": "bwrap",
        "sandbox_cgroup_parent": parent,
        "sandbox_default_memory_mb": 32,
        "mosaic_agent_command": "sleep 300",
        "max_concurrent_agents": n,
        "orchestrator_queue_concurrency": n,
        "agent_max_wall_s": 600,
        **extra,
    }
    return make_settings(tmp_path, valkey_url, **values)


async def spawn_running(orch: Orchestrator, origin: Path, n: int, tag: str) -> list[str]:
    """Spawn ``n`` agents and wait until each one's command runs in its sandbox."""
    gate = asyncio.Semaphore(16)

    async def spawn(i: int) -> str:
        request = SpawnRequest.model_validate(
            {"taskId": f"{tag}-{i}", "agentType": "worker", "context": {"repository": str(origin)}}
        )
        async with gate:
            return (await orch.engine.spawn(request)).agent_id

    ids = list(await asyncio.gather(*(spawn(i) for i in range(n))))
    uid = orch.engine.sandbox.user.uid  # type: ignore[attr-defined]
    async with asyncio.timeout(180):
        while True:
            agents = {a.agent_id: a for a in await orch.engine.list_agents()}
            assert not [i for i in ids if agents[i].status.final], "an agent ended early"
            running = all(agents[i].status is AgentStatus.RUNNING for i in ids)
            if running and set(agent_processes(uid, set(ids)).values()) == set(ids):
                return ids
            await asyncio.sleep(0.2)


async def test_kill_all_of_50_live_agents_leaves_no_process_and_no_cgroup(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path
) -> None:
    n = 50
    parent = f"mosaic-test-{uuid.uuid4().hex[:8]}"
    # a long grace: kill-all must not wait for it (sleep dies on TERM anyway)
    settings = bwrap_settings(tmp_path, valkey_url, parent, n, kill_grace_s=30)
    try:
        async with running(settings) as orch:
            ids = await spawn_running(orch, origin, n, "KA")
            uid = orch.engine.sandbox.user.uid  # type: ignore[attr-defined]
            cgroups = CgroupManager(sandbox_scope(settings, orch.engine.instance))
            before = agent_processes(uid, set(ids))
            assert len(before) >= n and all(cgroups.agent(i).exists() for i in ids)

            status, body = await orch.post("/agents/kill-all")

            assert status == 200
            assert (body["total"], body["killed"], body["failed"]) == (n, n, 0)
            assert [i for i in ids if cgroups.agent(i).exists()] == []
            assert agent_processes(uid, set(ids)) == {}
            assert [p for p in before if alive(p)] == []
            agents = {a.agent_id: a for a in await orch.engine.list_agents()}
            assert {agents[i].status for i in ids} == {AgentStatus.KILLED}
            assert all(agents[i].error == "killed by anonymous@127.0.0.1" for i in ids)
            audit = await orch.engine.store.audit_records(count=n + 1)
            assert audit[0]["what"] == "kill-all" and audit[0]["outcome"] == f"{n} killed, 0 failed"
            assert {r["agentId"] for r in audit[1:]} == set(ids)
            assert {(r["what"], r["outcome"]) for r in audit[1:]} == {("kill", "killed")}
            # the runs remove the worktrees afterwards, a few at a time
            worktrees = settings.mosaic_state_dir / "worktrees"
            async with asyncio.timeout(120):
                while any((worktrees / i).exists() for i in ids):
                    await asyncio.sleep(0.1)
            assert orch.engine.spawner.live == {} or await _drained(orch)
    finally:
        CgroupManager(parent).remove_parent()


async def _drained(orch: Orchestrator) -> bool:
    async with asyncio.timeout(30):
        while orch.engine.spawner.live:
            await asyncio.sleep(0.05)
    return True


async def test_kill_all_kills_at_once_on_every_instance(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path
) -> None:
    """Agents that ignore TERM, a 60 s grace: kill-all kills them at once, here and on the
    other instance (which learns it from the ``agent.killed`` event)."""
    parent = f"mosaic-test-{uuid.uuid4().hex[:8]}"
    common = {"mosaic_agent_command": IGNORES_TERM, "kill_grace_s": 60}
    a_settings = bwrap_settings(tmp_path / "a", valkey_url, parent, 1, **common)
    b_settings = bwrap_settings(tmp_path / "b", valkey_url, parent, 1, **common)
    try:
        async with running(a_settings) as a, running(b_settings) as b:
            ids = await spawn_running(a, origin, 2, "KI")
            instances = {(await a.engine.status(i)).instance for i in ids}
            assert instances == {a.engine.instance, b.engine.instance}
            uid = a.engine.sandbox.user.uid  # type: ignore[attr-defined]
            before = agent_processes(uid, set(ids))
            local = {p for p, i in before.items() if i in a.engine.spawner.live}
            assert local and local != set(before)

            async with asyncio.timeout(20):  # far below the grace: no TERM, no waiting
                status, body = await a.post("/agents/kill-all")
                assert status == 200 and body["killed"] == 2
                assert [p for p in local if alive(p)] == []
                while agent_processes(uid, set(ids)) or any(alive(p) for p in before):
                    await asyncio.sleep(0.05)
            for scope in (a.engine, b.engine):
                cgroups = CgroupManager(sandbox_scope(scope.settings, scope.instance))
                async with asyncio.timeout(20):
                    while any(cgroups.agent(i).exists() for i in ids):
                        await asyncio.sleep(0.05)
            assert {(await b.engine.status(i)).status for i in ids} == {AgentStatus.KILLED}
    finally:
        CgroupManager(parent).remove_parent()


async def test_kill_one_still_sends_term_first(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path
) -> None:
    """Killing one agent is not an emergency: TERM, and KILL only after the grace (SPEC §12)."""
    parent = f"mosaic-test-{uuid.uuid4().hex[:8]}"
    command = "trap 'echo got-term; exit 0' TERM; sleep 300 & wait"
    settings = bwrap_settings(
        tmp_path, valkey_url, parent, 1, mosaic_agent_command=command, kill_grace_s=10
    )
    try:
        async with running(settings) as orch:
            [agent_id] = await spawn_running(orch, origin, 1, "K1")
            worktree = Path((await orch.engine.status(agent_id)).worktree or "/nonexistent")
            assert worktree.exists()
            status, body = await orch.post(f"/agents/{agent_id}/kill")
            assert status == 200 and body["status"] == "killed"
            assert not worktree.exists()  # kill one returns once the run has ended
            log = orch.engine.spawner.paths.agent_dir(agent_id) / "stdout.log"
            assert "got-term" in log.read_text()
    finally:
        CgroupManager(parent).remove_parent()
