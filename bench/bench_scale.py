"""Scale benchmark (issue 14, SPEC §19). Not a test: prints figures.

One run, one engine (with its API on loopback, in this process, as ``mosaic-orchestrator`` runs
it), N concurrent sandboxed agents (default 200: bwrap, each in its own cgroup, 32 MB, the trivial
command ``sleep 300``, ``MAX_CONCURRENT_AGENTS=N``):

- **time to all running**: from the first spawn until every agent is ``running`` and its
  sandbox's processes are in its cgroup (spawns go through ``Engine.spawn``, 16 at a time);
- **orchestrator RSS**: this process's resident memory (``VmRSS``; the sandboxes and the Valkey
  server are other processes) idle, with N agents running, and its peak (``VmHWM``);
- **/health latency**, median and p99: sequential ``GET /health`` on one keep-alive connection from
  a separate process (so the probe does not share this event loop), idle, while the N agents
  start, and with the N agents running, all in the same run;
- then one kill-all of the N (its time is printed; nothing is left running), and one of 50;
- **SSE delivery** to 100 subscribers (client processes, ``bench_sse``), p50 and p99 of the delay
  from emit to receipt, events paced at 100/s (goal p99 <= 20 ms);
- **spawn to running** with bwrap and cgroups, one agent at a time, on an instance of
  ``MAX_CONCURRENT_AGENTS=4``: ``Engine.spawn`` until its
  ``agent.running`` event, p50 and p99 (goal p99 <= 100 ms), each spawn after the previous
  agent's teardown, then back to back (the previous teardown holds the repository's lock).

    .venv/bin/python -m bench.bench_scale [--agents 200] [--probe-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.bench_killall import bench_settings, start_agents
from bench.bench_spine import make_origin, pct
from bench.bench_sse import line as sse_line
from bench.bench_sse import phase
from core.api import serve
from core.engine import Engine
from core.instance import sandbox_scope
from core.models import SpawnRequest
from core.valkey import EmbeddedValkey
from sandbox.cgroups import CgroupManager

PROBE = """
import http.client, json, os, sys, time
host, port, stop, gap = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
conn = http.client.HTTPConnection(host, port, timeout=30)
lat = []
while not os.path.exists(stop):
    t = time.perf_counter()
    conn.request("GET", "/health")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200, resp.status
    lat.append(time.perf_counter() - t)
    time.sleep(gap)
print(json.dumps(lat))
"""


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Probe:
    """``GET /health`` in a loop from another process until :meth:`stop`."""

    def __init__(self, host: str, port: int, root: Path, gap_s: float = 0.02) -> None:
        self.args = (host, str(port), str(root / f"stop-{uuid.uuid4().hex[:6]}"), str(gap_s))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, *self.args, stdout=asyncio.subprocess.PIPE
        )

    async def stop(self) -> list[float]:
        assert self.proc is not None
        Path(self.args[2]).touch()
        out, _ = await self.proc.communicate()
        return [float(x) for x in json.loads(out or b"[]")]


def describe(name: str, lat: list[float]) -> str:
    if not lat:
        return f"  /health {name:22s} no sample"
    ms = [x * 1000 for x in lat]
    return (
        f"  /health {name:22s} median {statistics.median(ms):7.2f} ms   "
        f"p99 {pct(ms, 0.99):7.2f} ms   max {max(ms):7.2f} ms   ({len(ms)} requests)"
    )


async def probe_for(host: str, port: int, root: Path, seconds: float) -> list[float]:
    probe = Probe(host, port, root)
    await probe.start()
    await asyncio.sleep(seconds)
    return await probe.stop()


async def run(n: int, probe_s: float, root: Path, url: str) -> None:
    origin = make_origin(root)
    parent = f"mosaic-bench-scale-{uuid.uuid4().hex[:8]}"
    settings = bench_settings(url, root / "state", parent, n)
    try:
        async with (
            Engine.running(settings) as engine,
            serve(
                engine,
                host="127.0.0.1",
                port=0,
                api_key=None,
                max_body_bytes=1 << 20,
                sse_max_subscribers=SSE_SUBSCRIBERS + 10,
            ) as api,
        ):
            host, port = api.addresses[0][:2]
            await asyncio.sleep(1)  # settle: gc of start-up garbage, first requests
            idle_rss = rss_mb()
            idle = await probe_for(host, port, root, probe_s)

            ramp_probe = Probe(host, port, root)
            await ramp_probe.start()
            samples: list[float] = []

            async def sample_rss() -> None:
                while True:
                    samples.append(rss_mb())
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample_rss())
            t0 = time.perf_counter()
            ids = await start_agents(engine, origin, n, timeout=600)
            all_running = time.perf_counter() - t0
            ramp = await ramp_probe.stop()

            loaded = await probe_for(host, port, root, probe_s)
            loaded_rss = rss_mb()
            sampler.cancel()
            cgroups = CgroupManager(sandbox_scope(settings, engine.instance))
            live = sum(1 for i in ids if cgroups.agent(i).exists())

            t1 = time.perf_counter()
            result = await engine.kill_all(who="bench")
            kill_all = time.perf_counter() - t1
            peak = rss_mb("VmHWM")

            print(f"  {n} agents running (cgroups live: {live}) {all_running:8.2f} s after spawn")
            print(
                f"  orchestrator RSS: idle {idle_rss:6.1f} MB   {n} running {loaded_rss:6.1f} MB"
                f"   max sampled {max(samples or [0]):6.1f} MB   peak (VmHWM) {peak:6.1f} MB"
                f"   (goal <= 250 MB)"
            )
            print(describe("idle", idle))
            print(describe(f"while {n} start", ramp))
            print(describe(f"with {n} running", loaded))
            print(f"  kill-all of {n}: {kill_all:.3f} s (killed {result.killed}, failed "
                  f"{result.failed})")  # fmt: skip
            worktrees = settings.mosaic_state_dir / "worktrees"
            while any((worktrees / i).exists() for i in ids):
                await asyncio.sleep(0.05)

            fifty = await start_agents(engine, origin, 50, timeout=300)
            t2 = time.perf_counter()
            result = await engine.kill_all(who="bench")
            print(f"  kill-all of 50: {time.perf_counter() - t2:.3f} s (killed {result.killed}, "
                  f"failed {result.failed})")  # fmt: skip
            while any((worktrees / i).exists() for i in fifty):
                await asyncio.sleep(0.05)

            got = await phase(
                "sse", f"http://{host}:{port}", SSE_SUBSCRIBERS, 4, "scale-sse", 500, 100.0,
                engine.store.emit,
            )  # fmt: skip
            every = [d for per in got for d in per]
            verdict = "met" if pct(every, 0.99) <= 20 else "NOT met"
            print(
                sse_line(f"SSE, {SSE_SUBSCRIBERS} subscribers", every)
                + f"   goal p99 <= 20 ms: {verdict}"
            )

        # spawn latency as an instance is usually configured (a few agents at once: a BullMQ
        # worker of concurrency 200 costs every job a few ms more)
        settings = bench_settings(url, root / "state-spawn", parent, SPAWN_CONCURRENCY)
        async with Engine.running(settings) as engine:
            for settle in (True, False):
                spawned = await spawn_to_running(engine, origin, SPAWNS, settle=settle)
                verdict = "met" if pct(spawned, 0.99) <= 100 else "NOT met"
                how = "after the last teardown" if settle else "during the last teardown"
                print(sse_line(f"spawn -> running (bwrap) {how}", spawned)
                      + f"   goal p99 <= 100 ms: {verdict}")  # fmt: skip
    finally:
        CgroupManager(parent).remove_parent()


SSE_SUBSCRIBERS = 100
SPAWNS = 50
SPAWN_CONCURRENCY = 4


async def spawn_to_running(
    engine: Engine, origin: Path, count: int, *, settle: bool
) -> list[float]:
    """Milliseconds from ``Engine.spawn`` to the agent's ``agent.running`` event, one at a time
    (each agent is killed once it runs). ``settle``: the next spawn waits until the previous
    agent's worktree is torn down (else its teardown holds the repository's lock meanwhile)."""
    worktrees = engine.settings.mosaic_state_dir / "worktrees"
    latencies: list[float] = []
    events = engine.events()
    tag = uuid.uuid4().hex[:6]
    try:
        for i in range(count):
            request = SpawnRequest.model_validate(
                {
                    "taskId": f"S-{tag}-{i}",
                    "agentType": "worker",
                    "context": {"repository": str(origin)},
                }
            )
            t0 = time.perf_counter()
            agent_id = (await engine.spawn(request)).agent_id
            async for event in events:
                if event.agent_id == agent_id and event.type.value == "agent.running":
                    latencies.append((time.perf_counter() - t0) * 1000)
                    break
            await engine.kill(agent_id, who="bench")
            while settle and (worktrees / agent_id).exists():
                await asyncio.sleep(0.01)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return latencies


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--probe-s", type=float, default=10.0, help="seconds of /health probing")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="mosaic-bench-valkey-"))
    root = Path(tempfile.mkdtemp(prefix="mosaic-bench-scale-"))
    root.chmod(0o755)
    server = EmbeddedValkey(data)
    await server.start()
    try:
        print(
            f"scale: {args.agents} concurrent agents (bwrap, `sleep 300`, 32 MB each, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start)"
        )
        await run(args.agents, args.probe_s, root, f"unix://{server.socket}")
    finally:
        await server.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
