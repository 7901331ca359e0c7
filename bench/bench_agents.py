"""Benchmark of the agent path: runtime -> gateway (Unix socket) -> scripted model (loopback).

    .venv/bin/python bench/bench_agents.py [--turns 40] [--agents 50] [--agent-turns 10]
        [--cc-turns 40] [--cc-reps 5] [--cc-starts 5] [--only builtin|claude-code]

1. Overhead per model turn: the real runtime (streaming, tool dispatch of ``run_command``) through
   the gateway, against a baseline measured in the same run: the SDK calling the scripted model
   directly with the same growing conversation and no tools. Both run as subprocesses; per-turn
   cost is (T(2N) - T(N)) / N, so process start-up cancels out. Printed as a ratio.
2. Concurrency: ``--agents`` runtimes at once through one gateway (this process); the scripted
   model runs in its own process so that this process's CPU and RSS are the gateway's. Prints wall
   time, gateway CPU seconds, peak RSS and the worst event-loop lag seen.

3. claude-code (skipped without ``claude`` on PATH or without root for the bwrap sandbox): the real
   Claude Code CLI in the real bwrap sandbox as the sandbox user, prepared by the product's own
   runtime (``ClaudeCodeRuntime.prepare``: argv behind the in-sandbox forwarder, the gateway
   token), reaching the model through the gateway's Unix socket, against the same CLI talking to
   the scripted model directly, in the same run: (a) the same sandbox spec with the host network
   and ``ANTHROPIC_BASE_URL`` at the scripted model, (b) no sandbox, as the sandbox uid with a
   private HOME. The script ``claude-runaway`` calls Bash ``true`` forever; ``--max-turns`` ends
   it; per-turn cost is (T(2N) - T(N)) / N as above, best of ``--cc-reps`` (interleaved).
4. claude-code start: from sandbox start to Claude Code's ``system/init`` line and to its first
   request at the gateway, against ``claude --version`` (and ``true``) in the same sandbox spec;
   medians of ``--cc-starts`` runs.

Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

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
from core.agents.claude_code import find_claude  # noqa: E402
from core.models import AgentState, AgentType, GateProfile, SpawnRequest, Usage  # noqa: E402
from core.run.launch import SandboxPolicy  # noqa: E402
from core.run.runtimes.claude_code import ClaudeCodeRuntime, remove_home  # noqa: E402
from core.settings import CONFIG_DIR, Settings, load_settings  # noqa: E402
from sandbox import Sandbox, SandboxSpec  # noqa: E402
from sandbox.cgroups import CgroupManager  # noqa: E402
from sandbox.factory import create_sandbox  # noqa: E402
from sandbox.identity import SandboxUser  # noqa: E402
from sandbox.toolchains import path_directories, toolchain_binds  # noqa: E402

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


def _ratio(value: float, base: float) -> str:
    """``value / base``, or why there is none: a per-turn figure of (T(2N) - T(N)) / N that is
    not positive means the machine's noise outweighed N turns (rerun quieter or with more)."""
    if value <= 0 or base <= 0:
        return "n/a (noise larger than the turns: a per-turn figure is not positive)"
    return f"{value / base:.2f}x"


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
    print(f"ratio (runtime+gateway / direct):                   {_ratio(run_turn, base_turn)}")
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


class TimedGateway(ModelGateway):
    """The gateway, noting when each agent's first request reaches it (claude-code start-up)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_request: dict[str, float] = {}

    async def _handle(self, endpoint: Any, request: Any) -> Any:
        self.first_request.setdefault(endpoint.agent_id, time.perf_counter())
        return await super()._handle(endpoint, request)


CC_TASK = "[script:claude-runaway] Keep checking until told to stop."


class ClaudeCodeBench:
    """Claude Code sessions as the product prepares them, started in the bwrap sandbox."""

    def __init__(self, gateway: TimedGateway, url: str, base: Path, binary: Path) -> None:
        # a budget the benchmark never reaches; everything else as configured
        self.settings: Settings = load_settings(sandbox_backend="bwrap", agent_max_tokens=10**9)
        self.gateway, self.url, self.base, self.binary = gateway, url, base, binary
        self.scope = f"mosaic-bench-{uuid.uuid4().hex[:8]}"
        self.user = SandboxUser.resolve(self.settings.sandbox_uid, self.settings.sandbox_gid)
        self.sandbox: Sandbox = create_sandbox(
            "bwrap", cgroup_parent=self.scope, uid=self.settings.sandbox_uid,
            gid=self.settings.sandbox_gid, allow_no_cgroups=self.settings.sandbox_allow_no_cgroups,
            bwrap=self.settings.sandbox_bwrap,
        )  # fmt: skip
        self.toolchains = toolchain_binds(  # as the spawner does: every PATH directory
            [*path_directories(os.environ.get("PATH")), *self.settings.sandbox_toolchains],
            hidden=[base, CONFIG_DIR],
        )
        self.count = 0

    def close(self) -> None:
        CgroupManager(self.scope).remove_parent()

    @contextlib.asynccontextmanager
    async def prepared(self, turns: int) -> AsyncIterator[SandboxSpec]:
        """A fresh agent's sandbox spec from ``ClaudeCodeRuntime.prepare`` (gateway socket,
        I/O dir and HOME live until the block ends)."""
        self.count += 1
        agent_id = f"bench-cc-{self.count}"
        work, logs = self.base / agent_id / "work", self.base / agent_id / "logs"
        work.mkdir(parents=True)
        logs.mkdir()
        settings = self.settings.model_copy(update={"agent_max_turns": turns})
        runtime = ClaudeCodeRuntime(settings, self.gateway, self.binary, None)
        agent = AgentState(
            agent_id=agent_id, task_id="BENCH-1", agent_type=AgentType.WORKER,
            gate_profile=GateProfile.MINIMAL,
        )  # fmt: skip
        request = SpawnRequest.model_validate(
            {"taskId": "BENCH-1", "agentType": "worker",
             "context": {"repository": str(work), "instructions": CC_TASK}}
        )  # fmt: skip
        policy = SandboxPolicy.from_settings(
            settings, readonly=[], hidden=[Path.home(), CONFIG_DIR], toolchains=self.toolchains
        )
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(remove_home, agent_id)
            launch = await runtime.prepare(
                agent, request, worktree=work, agent_dir=logs, policy=policy, stack=stack
            )
            yield launch.spec

    def direct(self, spec: SandboxSpec) -> SandboxSpec:
        """The same spec without the forwarder: the host network, the scripted model as API."""
        argv = spec.argv[spec.argv.index("--") + 1 :]
        env = {**spec.env, "ANTHROPIC_BASE_URL": self.url}
        return dataclasses.replace(spec, argv=argv, env=env, network=True)

    async def run(self, spec: SandboxSpec, watch: bool = False) -> dict[str, float]:
        """Start the sandbox, wait for its end: seconds to exit (and, with ``watch``, to the
        ``system/init`` line and to the first request at the gateway)."""
        out = spec.log_dir / "stdout.log"
        for name in ("stdout.log", "stderr.log"):  # fresh logs, as the spawner does
            (spec.log_dir / name).unlink(missing_ok=True)
        started = time.perf_counter()
        proc = await self.sandbox.start(spec)
        times: dict[str, float] = {}
        waiter = asyncio.ensure_future(proc.wait())
        try:
            while watch and not waiter.done() and b'"subtype":"init"' not in _read(out):
                await asyncio.sleep(0.002)
            if watch:
                times["init"] = time.perf_counter() - started
            rc = await asyncio.wait_for(waiter, 600)
            times["exit"] = time.perf_counter() - started
        finally:
            with contextlib.suppress(Exception):
                await proc.kill(1.0)
            await proc.cleanup()
        if watch and spec.agent_id in self.gateway.first_request:
            times["request"] = self.gateway.first_request[spec.agent_id] - started
        times["rc"] = rc
        return times

    async def turns(self, turns: int, variant: str) -> tuple[float, float]:
        """Seconds for one session of ``turns`` model turns (via the gateway, direct in the
        sandbox, or direct without a sandbox), and the seconds per turn between its first and
        last tool result by Claude Code's own timestamps (no start-up in it)."""
        async with self.prepared(turns) as spec:
            if variant == "gateway":
                elapsed = (await self.run(spec))["exit"]
            elif variant == "sandbox":
                elapsed = (await self.run(self.direct(spec)))["exit"]
            else:
                elapsed = await self.unsandboxed(spec)
            log = _read(spec.log_dir / "stdout.log")
            done = log.count(b'"type":"assistant"')
            if done != turns:
                err = _read(spec.log_dir / "stderr.log")[-800:].decode("utf-8", "replace")
                last = log.rstrip().rsplit(b"\n", 1)[-1][:800].decode("utf-8", "replace")
                raise SystemExit(
                    f"claude-code {variant}: {done}/{turns} turns; last line: {last}; stderr: {err}"
                )
            return elapsed, _turn_slope(log)

    async def unsandboxed(self, spec: SandboxSpec) -> float:
        """The same argv and environment as the sandbox user, no sandbox: ``setpriv``, a
        private HOME and working directory owned by that uid, the scripted model as API."""
        own = Path(tempfile.mkdtemp(prefix="mosaic-bench-cc-"))
        try:
            (own / "home").mkdir()
            (own / "work").mkdir()
            for path in (own, own / "home", own / "work"):
                os.chown(path, self.user.uid, self.user.gid)
            env = {**self.direct(spec).env, "HOME": str(own / "home")}
            argv = ["setpriv", f"--reuid={self.user.uid}", f"--regid={self.user.gid}",
                    "--clear-groups", *self.direct(spec).argv]  # fmt: skip
            with open(spec.log_dir / "stdout.log", "wb") as stdout:
                started = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=own / "work", env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                await proc.wait()
                return time.perf_counter() - started
        finally:
            shutil.rmtree(own, ignore_errors=True)


def _turn_slope(log: bytes) -> float:
    """Seconds per turn between the first and the last tool result of a stream-json log."""
    stamps = []
    for line in log.splitlines():
        if line.startswith(b'{"type":"user"'):
            stamp = json.loads(line).get("timestamp")
            if stamp:
                stamps.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else math.nan


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


async def claude_code(bench: ClaudeCodeBench, turns: int, starts: int, reps: int) -> None:
    variants = ("gateway", "sandbox", "host")
    await bench.turns(2, "gateway")  # warm caches (the CLI's 200+ MB binary, the page cache)
    best: dict[tuple[str, int], float] = {}
    slopes: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(reps):  # the machine is shared: best of reps, the variants interleaved
        for variant in variants:
            for n in (turns, 2 * turns):
                elapsed, slope = await bench.turns(n, variant)
                slopes[variant].append(slope)
                best[variant, n] = min(best.get((variant, n), elapsed), elapsed)
    per = {v: (best[v, 2 * turns] - best[v, turns]) / turns for v in variants}
    ms = {v: f"{per[v] * 1000:7.2f} ms" for v in variants}
    print(f"claude-code per model turn ({turns} and {2 * turns} turns, Bash `true` each, "
          f"best of {reps}):")  # fmt: skip
    print(f"  direct, no sandbox (setpriv uid {bench.user.uid}):      {ms['host']}")
    print(f"  direct, same bwrap sandbox, host network:      {ms['sandbox']}")
    print(f"  sandbox -> forwarder -> gateway (product path): {ms['gateway']}")
    for label, other in (("in the same sandbox", "sandbox"), ("without a sandbox", "host")):
        print(f"  ratio gateway path / direct {label}: {_ratio(per['gateway'], per[other])}")
    for v in variants:
        print(f"  ({v}: start-up and exit {best[v, turns] - turns * per[v]:.2f} s)")
    slope = {v: statistics.median(slopes[v]) for v in variants}
    print("  by Claude Code's own timestamps, first to last tool result, median of runs:")
    print("    " + ", ".join(f"{v} {slope[v] * 1000:.2f} ms" for v in variants))
    print(f"    ratio gateway path / direct in the same sandbox: "
          f"{slope['gateway'] / slope['sandbox']:.2f}x; without a sandbox: "
          f"{slope['gateway'] / slope['host']:.2f}x")  # fmt: skip

    agent: dict[str, list[float]] = {"init": [], "request": [], "exit": []}
    bare: dict[str, list[float]] = {"direct": [], "version": [], "true": [], "forwarder": []}
    for _ in range(starts):
        async with bench.prepared(1) as spec:
            times = await bench.run(spec, watch=True)
            for key in agent:
                agent[key].append(times.get(key, math.nan))
            bare["direct"].append((await bench.run(bench.direct(spec), watch=True))["init"])
            forwarder = spec.argv[: spec.argv.index("--") + 1]
            for key, argv in (
                ("version", [str(bench.binary), "--version"]),
                ("true", ["true"]),
                ("forwarder", [*forwarder, "true"]),
            ):
                times = await bench.run(dataclasses.replace(spec, argv=argv))
                if times["rc"] != 0:
                    raise SystemExit(f"{argv} in the sandbox failed ({times['rc']:.0f})")
                bare[key].append(times["exit"])
    med = statistics.median
    print(f"claude-code sandbox start (median of {starts}):")
    print(f"  agent: sandbox start -> system/init on stdout:   {med(agent['init']):6.2f} s")
    print(f"  agent: sandbox start -> first request at gateway: {med(agent['request']):6.2f} s")
    print(f"  agent: whole 1-turn session until exit:          {med(agent['exit']):6.2f} s")
    print(f"  same, direct (no forwarder, host network) -> init: {med(bare['direct']):6.2f} s")
    print(f"  `claude --version`, same sandbox spec, to exit:  {med(bare['version']):6.2f} s")
    print(f"  `true`, same sandbox spec, to exit:              {med(bare['true']):6.2f} s")
    print(f"  the forwarder running `true`, to exit:           {med(bare['forwarder']):6.2f} s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--agent-turns", type=int, default=10)
    parser.add_argument("--cc-turns", type=int, default=40)
    parser.add_argument("--cc-reps", type=int, default=5)
    parser.add_argument("--cc-starts", type=int, default=5)
    parser.add_argument("--only", choices=("builtin", "claude-code"))
    args = parser.parse_args()
    usages: list[Usage] = []

    async def on_usage(agent_id: str, usage: Usage) -> None:
        usages.append(usage)

    scripted, url = await start_scripted()
    base = Path(tempfile.mkdtemp(prefix="mosaic-bench-"))
    gateway = TimedGateway(url, "bench-key", PriceTable.load(), on_usage)
    cc: ClaudeCodeBench | None = None
    try:
        if args.only != "claude-code":
            await per_turn_overhead(gateway, url, base, args.turns)
            await concurrency(gateway, base, args.agents, args.agent_turns)
        if args.only != "builtin":
            binary = find_claude(None)
            if binary is None:
                print("claude-code: skipped, no `claude` on PATH (.ci/setup.d/30-claude-code.sh)")
            elif os.geteuid() != 0:
                print("claude-code: skipped, the bwrap sandbox as the sandbox user needs root")
            else:
                cc = ClaudeCodeBench(gateway, url, base, binary)
                await claude_code(cc, args.cc_turns, args.cc_starts, args.cc_reps)
        cost = sum(u.cost_usd for u in usages)
        print(f"usage recorded: {len(usages)} responses, ${cost:.4f} at scripted prices")
    finally:
        await gateway.close()
        scripted.terminate()
        await scripted.wait()
        if cc is not None:
            cc.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
