"""Engine spine benchmark (issue 2). Not a test: prints figures.

1. spawn-to-running latency (p50/p99) over N spawns of a trivial agent command, one at a time,
   from ``Engine.spawn`` to the ``agent.running`` event (clone cache warm, worktree per agent);
2. queue dispatch throughput: the orchestrator's ``TaskQueue`` (add + process through its worker)
   against raw ``bullmq`` add + process of the same number of jobs, same server, same run;
3. whole-engine throughput: N agents spawned at once, through to ``completed``.

    .venv/bin/python bench/bench_spine.py [--spawns 200] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bullmq import Queue, Worker

from core.engine import Engine
from core.models import SpawnRequest
from core.queue import TaskQueue
from core.settings import load_settings
from core.valkey import EmbeddedValkey


def make_origin(root: Path) -> Path:
    bare = root / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    seed = root / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True)
    (seed / "README.md").write_text("bench\n")
    env = ["-c", "user.name=b", "-c", "user.email=b@b"]
    subprocess.run(["git", *env, "-C", str(seed), "add", "."], check=True)
    subprocess.run(["git", *env, "-C", str(seed), "commit", "-qm", "init"], check=True)
    subprocess.run(["git", "-C", str(seed), "push", "-q", "origin", "HEAD:main"], check=True)
    return bare


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def spawn_latency(url: str, root: Path, origin: Path, count: int) -> list[float]:
    settings = load_settings(
        valkey_url=url,
        mosaic_state_dir=root / "state",
        sandbox_backend="none",
        mosaic_agent_command="true",
        max_concurrent_agents=4,
        orchestrator_queue_concurrency=4,
    )
    latencies: list[float] = []
    async with Engine.running(settings) as engine:
        events = engine.events()
        for i in range(count):
            request = SpawnRequest.model_validate(
                {"taskId": f"L-{i}", "agentType": "worker", "context": {"repository": str(origin)}}
            )
            t0 = time.perf_counter()
            agent_id = (await engine.spawn(request)).agent_id
            async for event in events:
                if event.agent_id == agent_id and event.type.value == "agent.running":
                    latencies.append(time.perf_counter() - t0)
                    break
        await events.aclose()  # type: ignore[attr-defined]
        while any(a.status.value in ("spawning", "running") for a in await engine.list_agents()):
            await asyncio.sleep(0.05)
    return latencies


async def raw_bullmq(conn: dict[str, str], jobs: int) -> float:
    name = f"raw-{time.time_ns()}"
    queue = Queue(name, {"connection": dict(conn)})
    done = asyncio.Event()
    count = 0

    async def process(job: object, token: str) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    t0 = time.perf_counter()
    for i in range(jobs):
        await queue.add("j", {"i": i}, {"priority": 5, "attempts": 3})
    worker = Worker(
        name, process, {"connection": {**conn, "socket_timeout": None}, "concurrency": 4}
    )
    await done.wait()
    elapsed = time.perf_counter() - t0
    await worker.close()
    await queue.obliterate(force=True)
    await queue.close()
    return jobs / elapsed


async def orchestrator_queue(url: str, conn: dict[str, str], jobs: int) -> float:
    settings = load_settings(
        valkey_url=url,
        queue_name=f"orch-{time.time_ns()}",
        max_concurrent_agents=4,
        orchestrator_queue_concurrency=4,
    )
    queue = TaskQueue(settings, conn)
    done = asyncio.Event()
    count = 0

    async def process(agent_id: str, attempt: int, attempts: int) -> dict[str, str]:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()
        return {}

    t0 = time.perf_counter()
    for i in range(jobs):
        await queue.add(f"a-{i}", f"t-{i}", 5)
    queue.start_worker(process, name="bench")
    await done.wait()
    elapsed = time.perf_counter() - t0
    await queue.close_worker()
    await queue.queue.obliterate(force=True)
    await queue.close()
    return jobs / elapsed


async def engine_throughput(url: str, root: Path, origin: Path, count: int) -> float:
    settings = load_settings(
        valkey_url=url,
        mosaic_state_dir=root / "state2",
        sandbox_backend="none",
        mosaic_agent_command="true",
        max_concurrent_agents=4,
        orchestrator_queue_concurrency=4,
    )
    async with Engine.running(settings) as engine:
        t0 = time.perf_counter()
        for i in range(count):
            request = SpawnRequest.model_validate(
                {"taskId": f"E-{i}", "agentType": "worker", "context": {"repository": str(origin)}}
            )
            await engine.spawn(request)
        while True:
            agents = await engine.list_agents()
            mine = [a for a in agents if a.task_id.startswith("E-")]
            if sum(a.status.value == "completed" for a in mine) == count:
                break
            await asyncio.sleep(0.05)
        return count / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mosaic-bench-"))
    server = EmbeddedValkey(root / "valkey")
    await server.start()
    try:
        url = f"unix://{server.socket}"
        conn = {"unix_socket_path": str(server.socket)}
        origin = make_origin(root)
        lat = await spawn_latency(url, root, origin, args.spawns)
        print(f"spawn-to-running over {len(lat)} spawns (none sandbox, `true`):")
        print(
            f"  p50 {statistics.median(lat) * 1000:.1f} ms   p99 {pct(lat, 0.99) * 1000:.1f} ms"
            f"   max {max(lat) * 1000:.1f} ms"
        )
        raw = await raw_bullmq(conn, args.jobs)
        ours = await orchestrator_queue(url, conn, args.jobs)
        print(f"queue dispatch, {args.jobs} jobs, concurrency 4:")
        print(f"  raw bullmq {raw:.0f} jobs/s   orchestrator TaskQueue {ours:.0f} jobs/s")
        print(f"  ratio orchestrator/raw = {ours / raw:.2f}")
        n = min(args.spawns, 100)
        whole = await engine_throughput(url, root, origin, n)
        print(
            f"whole engine, {n} agents spawned at once (worktree + process + finish):"
            f" {whole:.1f} agents/s"
        )
    finally:
        await server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
