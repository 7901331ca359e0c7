"""Agents through the queue and the killswitch: events, kill, pause/resume, priority, retries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import redis.asyncio as aioredis

from core.models import Event
from core.store import StateStore
from tests.conftest import git
from tests.spine.conftest import Orchestrator, OrchestratorFactory


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _wait_file(path: Path, timeout: float = 20) -> str:
    async with asyncio.timeout(timeout):
        while not (path.exists() and path.read_text().strip()):
            await asyncio.sleep(0.05)
    return path.read_text().strip()


async def test_sse_delivers_one_agents_lifecycle_in_order(orch: Orchestrator, origin: Path) -> None:
    got: list[Event] = []

    async def listen() -> None:
        got.extend(
            await orch.sse(until=lambda evs: any(e.type.value == "agent.completed" for e in evs))
        )

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    agent_id = await orch.spawn("T-sse", origin)
    await asyncio.wait_for(listener, 30)
    mine = [
        e.type.value
        for e in got
        if e.agent_id == agent_id and e.type.value.split(".")[0] in ("agent", "task")
    ]
    assert mine == [
        "agent.spawning",
        "task.queued",
        "task.started",
        "agent.running",
        "agent.completed",
    ]
    ids = [e.id for e in got]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


async def test_sse_replays_missed_events_after_last_event_id(
    orch: Orchestrator, origin: Path
) -> None:
    first = await orch.spawn("T-r1", origin)
    await orch.wait_status(first, "completed")
    # everything so far, from the beginning of the stream
    replay = await orch.sse(
        headers={"Last-Event-ID": "0-0"},
        until=lambda evs: any(e.type.value == "agent.completed" for e in evs),
    )
    cut = replay[1].id  # pretend the client saw only the first two events
    second = await orch.spawn("T-r2", origin)
    await orch.wait_status(second, "completed")
    missed = await orch.sse(
        headers={"Last-Event-ID": cut},
        until=lambda evs: sum(e.type.value == "agent.completed" for e in evs) == 2,
    )
    assert missed[0].id == replay[2].id
    assert [e.agent_id for e in missed if e.type.value == "agent.completed"] == [first, second]


async def test_failing_agent_command_fails_with_its_reason(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command="echo nope >&2; exit 7") as orch:
        agent_id = await orch.spawn("T-f", origin)
        data = await orch.wait_status(agent_id, "failed", "completed")
        assert data["status"] == "failed"
        assert data["error"].startswith("agent: exited with code 7")
        assert "nope" in data["error"]


async def test_kill_one_leaves_no_process_behind(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    async with orchestrator_factory(mosaic_agent_command=command) as orch:
        agent_id = await orch.spawn("T-k", origin)
        await orch.wait_status(agent_id, "running")
        await _wait_file(pids)
        while len(pids.read_text().split()) < 2:
            await asyncio.sleep(0.05)
        procs = [int(p) for p in pids.read_text().split()]
        assert all(_alive(p) for p in procs)
        status, body = await orch.post(f"/agents/{agent_id}/kill")
        assert status == 200 and body["status"] == "killed"
        assert not any(_alive(p) for p in procs)
        data = await orch.wait_status(agent_id, "killed")
        assert "killed by" in data["error"]
        assert not Path(data["worktree"]).exists()
        # idempotent
        status, again = await orch.post(f"/agents/{agent_id}/kill")
        assert status == 200 and again["status"] == "killed"


async def test_kill_of_a_finished_agent_keeps_its_final_status(
    orch: Orchestrator, origin: Path
) -> None:
    agent_id = await orch.spawn("T-done", origin)
    await orch.wait_status(agent_id, "completed")
    status, body = await orch.post(f"/agents/{agent_id}/kill")
    assert status == 200 and body["status"] == "completed"


async def test_kill_all_kills_running_and_queued_agents(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pids"
    command = f"echo $$ >> {marker}; exec sleep 300"
    async with orchestrator_factory(mosaic_agent_command=command, max_concurrent_agents=2) as orch:
        ids = [await orch.spawn(f"T-all-{i}", origin) for i in range(3)]
        for agent_id in ids[:2]:
            await orch.wait_status(agent_id, "running")
        while len(marker.read_text().split() if marker.exists() else []) < 2:
            await asyncio.sleep(0.05)
        status, body = await orch.post("/agents/kill-all")
        assert status == 200
        assert body == {
            "message": "Kill all completed: 3 killed, 0 failed",
            "total": 3,
            "killed": 3,
            "failed": 0,
            "errors": [],
        }
        for agent_id in ids:
            assert (await orch.wait_status(agent_id, "killed"))["status"] == "killed"
        assert not any(_alive(int(p)) for p in marker.read_text().split())
        await asyncio.sleep(0.5)  # the queued one must not start after being killed
        assert len(marker.read_text().split()) == 2
        audit = await orch.engine.store.audit_records()
        assert audit[0]["what"] == "kill-all" and audit[0]["outcome"] == "3 killed, 0 failed"


async def test_pause_holds_jobs_and_resume_releases_them(orch: Orchestrator, origin: Path) -> None:
    status, _ = await orch.post("/queue/pause")
    assert status == 200
    agent_id = await orch.spawn("T-p", origin)
    await asyncio.sleep(1.0)
    _, stats = await orch.get("/queue/stats")
    assert stats["paused"] is True
    assert stats["workers"] == 1 and stats["concurrency"] == 2
    assert stats["waiting"] + stats["prioritized"] == 1
    assert (await orch.get(f"/agents/{agent_id}/status"))[1]["status"] == "spawning"
    await orch.post("/queue/resume")
    await orch.wait_status(agent_id, "completed")
    for _ in range(100):  # the job is marked completed just after the agent's final state
        _, stats = await orch.get("/queue/stats")
        if stats["completed"]:
            break
        await asyncio.sleep(0.05)
    assert stats["paused"] is False and stats["completed"] == 1


async def test_priority_1_runs_first(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(
        max_concurrent_agents=1, orchestrator_queue_concurrency=1
    ) as orch:
        await orch.post("/queue/pause")
        ids = {}
        for prio in (5, 10, 1, 3):
            ids[await orch.spawn(f"T-prio-{prio}", origin, priority=prio)] = prio
        await orch.post("/queue/resume")
        for agent_id in ids:
            await orch.wait_status(agent_id, "completed")
        started = {aid: (await orch.get(f"/agents/{aid}/status"))[1]["startedAt"] for aid in ids}
        order = [ids[a] for a in sorted(started, key=lambda a: started[a])]
        assert order == [1, 3, 5, 10]


async def test_retries_with_backoff_then_fails(
    orchestrator_factory: OrchestratorFactory, tmp_path: Path
) -> None:
    missing = f"file://{tmp_path}/does-not-exist.git"
    async with orchestrator_factory(queue_attempts=3) as orch:
        events_task = asyncio.create_task(
            orch.sse(until=lambda evs: any(e.type.value == "agent.failed" for e in evs))
        )
        await asyncio.sleep(0.3)
        agent_id = await orch.spawn("T-retry", missing)
        data = await orch.wait_status(agent_id, "failed", timeout=30)
        assert data["error"].startswith("workspace:")
        assert data["attempts"] == 3
        events = await asyncio.wait_for(events_task, 10)
        retrying = [e for e in events if e.type.value == "task.retrying"]
        assert [e.data["attempt"] for e in retrying] == [1, 2]
        assert retrying[1].data["nextDelayMs"] == 2 * retrying[0].data["nextDelayMs"]
        gap = retrying[1].timestamp - retrying[0].timestamp
        assert gap.total_seconds() >= 0.1  # the second wait is the doubled backoff (100 ms)
        _, stats = await orch.get("/queue/stats")
        assert stats["failed"] >= 1


async def test_never_more_live_agents_than_the_cap(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(
        mosaic_agent_command="sleep 0.6", max_concurrent_agents=2, orchestrator_queue_concurrency=5
    ) as orch:
        ids = [await orch.spawn(f"T-cap-{i}", origin) for i in range(5)]
        peak = 0
        while True:
            _, listing = await orch.get("/agents")
            statuses = [a["status"] for a in listing["agents"]]
            peak = max(peak, statuses.count("running"))
            if all(s == "completed" for s in statuses):
                break
            await asyncio.sleep(0.05)
        assert peak == 2
        assert len(ids) == 5


async def test_shutdown_kills_and_reaps_local_agents(
    orchestrator_factory: OrchestratorFactory,
    origin: Path,
    tmp_path: Path,
    redis_client: aioredis.Redis,
) -> None:
    marker = tmp_path / "pid"
    command = f"echo $$ > {marker}; exec sleep 300"
    async with orchestrator_factory(mosaic_agent_command=command) as orch:
        agent_id = await orch.spawn("T-shut", origin)
        await orch.wait_status(agent_id, "running")
        pid = int(await _wait_file(marker))
        worktree = (await orch.engine.status(agent_id)).worktree
    assert not _alive(pid)
    stored = await StateStore(redis_client).get_agent(agent_id)
    assert stored.status.value == "killed" and stored.error == "killed by shutdown"
    assert worktree and not Path(worktree).exists()


async def test_kill_during_the_gates_stops_them_at_once(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    seed = tmp_path / "slow-gates"
    git("clone", "-q", str(origin), str(seed))
    (seed / ".mosaic").mkdir()
    marker = tmp_path / "gate-pid"
    (seed / ".mosaic" / "gates.toml").write_text(
        f'[gates]\ntypecheck = false\nlint = "echo $$ > {marker}; exec sleep 300"\n'
        "tests = false\ncoverage = false\n"
    )
    git("add", ".", cwd=seed)
    git("commit", "-qm", "slow gate", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    async with orchestrator_factory(mosaic_agent_command="echo x > x.txt; echo did x") as orch:
        agent_id = await orch.spawn("T-gatekill", origin)
        gate_pid = int(await _wait_file(marker))
        assert _alive(gate_pid)
        status, body = await orch.post(f"/agents/{agent_id}/kill")
        assert status == 200 and body["status"] == "killed"
        assert not _alive(gate_pid)
        assert orch.engine.spawner.live == {}
        audit = await orch.engine.store.audit_records()
        assert audit[0]["outcome"] == "killed"
