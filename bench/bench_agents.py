"""Benchmark of the agent path: runtime -> gateway (Unix socket) -> scripted model (loopback).

    /work/venv/bin/python bench/bench_agents.py [--turns 40] [--agents 50] [--agent-turns 10]

1. Overhead per model turn: the real runtime (streaming, tool dispatch of ``run_command``) through
   the gateway, against a baseline measured in the same run: the SDK calling the scripted model
   directly with the same growing conversation and no tools. Both run as subprocesses; per-turn
   cost is (T(2N) - T(N)) / N, so process start-up cancels out. Printed as a ratio.
2. Concurrency: ``--agents`` runtimes at once through one gateway (this process); the scripted
   model runs in its own process so that this process's CPU and RSS are the gateway's. Prints wall
   time, gateway CPU seconds, peak RSS and the worst event-loop lag seen.

Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.agents import (  # noqa: E402
    ModelGateway,
    PriceTable,
    build_prompts,
    build_runtime_config,
    runtime_argv,
)
from core.models import Usage  # noqa: E402

BASELINE = r"""
import sys, time, anthropic
url, turns = sys.argv[1], int(sys.argv[2])
client = anthropic.Anthropic(api_key="bench", base_url=url, max_retries=0)
messages = [{"role": "user", "content": "[script:runaway] go"}]
for _ in range(turns):
    with client.messages.stream(model="scripted", max_tokens=1024, messages=messages) as stream:
        message = stream.get_final_message()
    messages.append({"role": "assistant", "content": [b.to_dict() for b in message.content]})
    call = next(b for b in message.content if b.type == "tool_use")
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]})
"""


async def start_scripted() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.agents.scripted", "--port", "0",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        raise SystemExit(f"scripted model did not start: {line!r}")
    return proc, match.group(0)


async def timed(argv: list[str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env={"PATH": "/usr/bin:/bin"}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-500:]}")
    return time.perf_counter() - started, proc.returncode or 0


async def run_runtime(
    gateway: ModelGateway, base: Path, agent_id: str, turns: int
) -> tuple[float, int]:
    work = base / agent_id
    work.mkdir(parents=True)
    system, prompt = build_prompts("worker", agent_id, [], [], "[script:runaway]")
    async with gateway.serve_agent(agent_id, base / f"s-{agent_id}", None) as endpoint:
        config = build_runtime_config(
            agent_id=agent_id, role="worker", system=system, prompt=prompt, model="scripted",
            socket=endpoint.socket_path, token=endpoint.token, workdir=work,
            transcript=base / f"{agent_id}.jsonl", max_turns=turns, max_wall_s=600,
        )  # fmt: skip
        path = base / f"{agent_id}.json"
        path.write_text(json.dumps(config))
        return await timed(runtime_argv(path), work)


async def per_turn_overhead(gateway: ModelGateway, url: str, base: Path, turns: int) -> None:
    async def baseline(n: int) -> float:
        return (await timed([sys.executable, "-c", BASELINE, url, str(n)], base))[0]

    async def runtime(n: int, tag: str) -> float:
        return (await run_runtime(gateway, base, f"t{tag}{n}", n))[0]

    await baseline(2)  # warm caches
    # the machine is shared: take the best of 3 of each measurement
    b1 = min([await baseline(turns) for _ in range(3)])
    b2 = min([await baseline(2 * turns) for _ in range(3)])
    r1 = min([await runtime(turns, f"a{i}") for i in range(3)])
    r2 = min([await runtime(2 * turns, f"b{i}") for i in range(3)])
    base_turn = (b2 - b1) / turns
    run_turn = (r2 - r1) / turns
    print(f"per model turn, SDK direct to scripted model:       {base_turn * 1000:7.2f} ms")
    print(f"per model turn, runtime via gateway incl. tool run: {run_turn * 1000:7.2f} ms")
    print(f"ratio (runtime+gateway / direct):                   {run_turn / base_turn:7.2f}x")
    print(f"  (process start-up: runtime {(r1 - turns * run_turn):.2f} s, "
          f"baseline {(b1 - turns * base_turn):.2f} s)")  # fmt: skip


async def concurrency(gateway: ModelGateway, base: Path, agents: int, turns: int) -> None:
    me = psutil.Process()
    peak_rss = me.memory_info().rss
    lags: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_rss
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append(time.perf_counter() - before - 0.05)
            peak_rss = max(peak_rss, me.memory_info().rss)

    sampler = asyncio.create_task(sample())
    cpu0 = me.cpu_times()
    started = time.perf_counter()
    results = await asyncio.gather(
        *(run_runtime(gateway, base, f"c{i}", turns) for i in range(agents))
    )
    wall = time.perf_counter() - started
    cpu1 = me.cpu_times()
    stop.set()
    await sampler
    ok = sum(1 for _, code in results if code == 3)  # runaway ends at the turn budget
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    print(f"{agents} concurrent runtimes x {turns} turns through one gateway: "
          f"{ok}/{agents} ended as expected")  # fmt: skip
    print(f"  wall time:              {wall:7.2f} s ({agents * turns / wall:.0f} model turns/s)")
    print(f"  gateway process CPU:    {cpu:7.2f} s ({cpu / (agents * turns) * 1000:.2f} ms/turn)")
    print(f"  gateway process RSS:    {peak_rss / 2**20:7.1f} MiB peak")
    lags.sort()
    print(f"  event-loop lag:         {lags[len(lags) // 2] * 1000:7.1f} ms median, "
          f"{lags[-1] * 1000:.1f} ms worst (includes CPU starvation: {agents} runtimes, "
          f"{psutil.cpu_count()} cores)")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--agent-turns", type=int, default=10)
    args = parser.parse_args()
    usages: list[Usage] = []

    async def on_usage(agent_id: str, usage: Usage) -> None:
        usages.append(usage)

    scripted, url = await start_scripted()
    base = Path(tempfile.mkdtemp(prefix="mosaic-bench-"))
    gateway = ModelGateway(url, "bench-key", PriceTable.load(), on_usage)
    try:
        await per_turn_overhead(gateway, url, base, args.turns)
        await concurrency(gateway, base, args.agents, args.agent_turns)
        cost = sum(u.cost_usd for u in usages)
        print(f"usage recorded: {len(usages)} responses, ${cost:.4f} at scripted prices")
    finally:
        await gateway.close()
        scripted.terminate()
        await scripted.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
