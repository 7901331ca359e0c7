"""Kill-all benchmark (issue 14, SPEC §19). Not a test: prints figures.

For each N (default 50 and 200): N agents (``sleep 300`` under the bwrap backend, each in its own
cgroup, 32 MB) are started through the real engine and left running; then

- **kill-all**: ``Engine.kill_all`` from the call until it returns, by which time every agent is
  ``killed`` and its processes and cgroups are gone (checked after, by the cgroups' absence and by
  the processes recorded before the kill);
- **teardown**: from the same call until every agent's worktree is removed too (kept work first);
  the runs do this after kill-all has returned;
- **baseline**: the same number of the same sandboxes, started directly (``BwrapSandbox.start``,
  no engine), killed by the bare kernel sequence of cgroup v1, one sandbox after another, by this
  script itself: freeze, SIGKILL every pid, thaw, wait for ``cgroup.procs`` to empty, rmdir each
  hierarchy's directory, reap the bwrap child (on cgroup v2: ``cgroup.kill``, wait, rmdir).

Kill-all is printed in seconds and as a ratio to the baseline, both measured in the same run.
``--term-grace S`` also measures a kill-all that sends TERM first and KILL after ``S`` seconds
(the product's kill-all kills at once; ``sleep`` dies on TERM, so this shows TERM's own cost).

    .venv/bin/python bench/bench_killall.py [--agents 50 200] [--term-grace 5] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bench.bench_spine import make_origin
from core.engine import Engine
from core.instance import instance_name, sandbox_scope
from core.models import AgentStatus, SpawnRequest
from core.settings import Settings, load_settings
from core.valkey import EmbeddedValkey
from sandbox.base import SandboxSpec
from sandbox.bwrap import BwrapProcess, BwrapSandbox
from sandbox.cgroups import AgentCgroup, CgroupManager

MEMORY_MB = 32


def bench_settings(url: str, state: Path, parent: str, n: int) -> Settings:
    return load_settings(
        valkey_url=url,
        mosaic_state_dir=state,
        sandbox_backend="bwrap",
        sandbox_cgroup_parent=parent,
        sandbox_default_memory_mb=MEMORY_MB,
        mosaic_agent_command="sleep 300",
        max_concurrent_agents=max(2, n),
        orchestrator_queue_concurrency=max(2, n),
        agent_max_wall_s=3600,
        claude_api_key=None,
        anthropic_api_key=None,
        anthropic_base_url=None,
        coordinator_url=None,
        orchestrator_api_key=None,
    )


async def start_agents(engine: Engine, origin: Path, n: int, *, timeout: float = 300) -> list[str]:
    """Spawn ``n`` agents (a few spawn calls at a time) and wait until every one is running."""
    gate = asyncio.Semaphore(16)
    tag = uuid.uuid4().hex[:6]

    async def spawn(i: int) -> str:
        request = SpawnRequest.model_validate(
            {
                "taskId": f"K-{tag}-{i}",
                "agentType": "worker",
                "context": {"repository": str(origin)},
            }
        )
        async with gate:
            return (await engine.spawn(request)).agent_id

    ids = list(await asyncio.gather(*(spawn(i) for i in range(n))))
    deadline = time.monotonic() + timeout
    while True:
        agents = {a.agent_id: a for a in await engine.list_agents()}
        states = [agents[i].status for i in ids]
        if all(s is AgentStatus.RUNNING for s in states):
            break
        ended = [i for i in ids if agents[i].status.final]
        if ended:
            raise RuntimeError(f"{len(ended)} agent(s) ended early: {agents[ended[0]].error}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"agents not running after {timeout}s: {states.count(AgentStatus.RUNNING)}/{n}"
            )
        await asyncio.sleep(0.2)
    # running is recorded once bwrap is started; wait until every agent's `sleep` is in its cgroup
    cgroups = CgroupManager(sandbox_scope(engine.settings, engine.instance))
    while not all(len(cgroups.agent(i).pids()) >= 3 for i in ids):
        if time.monotonic() > deadline:
            raise RuntimeError("sandboxes did not fill their cgroups in time")
        await asyncio.sleep(0.1)
    return ids


def agent_pids(cgroups: CgroupManager, ids: list[str]) -> set[tuple[int, str]]:
    """(pid, start time) of every process in the agents' cgroups."""
    out: set[tuple[int, str]] = set()
    for agent_id in ids:
        for pid in cgroups.agent(agent_id).pids():
            with contextlib.suppress(OSError):
                out.add((pid, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]))
    return out


def survivors(before: set[tuple[int, str]]) -> list[int]:
    alive = []
    for pid, start in before:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[19] == start and fields[0] != "Z":
            alive.append(pid)
    return alive


@dataclass
class Figures:
    kill_all_s: float
    """From the call until it returns: every agent killed, its processes and cgroup gone."""
    teardown_s: float
    """From the call until every worktree is removed too (kept work committed first)."""


async def engine_kill_all(
    url: str, root: Path, origin: Path, n: int, term_grace: float | None
) -> Figures:
    """N live agents through the engine, then one kill-all. ``term_grace``: TERM first, KILL
    after that grace (the product's kill-all kills at once; this measures the alternative)."""
    parent = f"mosaic-bench-{uuid.uuid4().hex[:8]}"
    settings = bench_settings(url, root / f"state-{n}-{parent}", parent, n)
    cgroups = CgroupManager(sandbox_scope(settings, instance_name(settings)))
    worktrees = settings.mosaic_state_dir / "worktrees"
    try:
        async with Engine.running(settings) as engine:
            ids = await start_agents(engine, origin, n)
            before = agent_pids(cgroups, ids)
            t0 = time.perf_counter()
            if term_grace is None:
                result = await engine.kill_all(who="bench")
            else:
                result = await engine.killswitch.kill_all(who="bench", grace_s=term_grace)
            elapsed = time.perf_counter() - t0
            left = [i for i in ids if cgroups.agent(i).exists()]
            alive = survivors(before)
            states = {a.agent_id: a.status for a in await engine.list_agents()}
            not_killed = [i for i in ids if states.get(i) is not AgentStatus.KILLED]
            while any((worktrees / i).exists() for i in ids):
                await asyncio.sleep(0.01)
            teardown = time.perf_counter() - t0
            if result.killed != n or left or alive or not_killed:
                print(
                    f"    !! killed={result.killed}/{n} cgroups left={len(left)} "
                    f"processes alive={len(alive)} not killed={len(not_killed)} "
                    f"errors={result.errors[:2]}"
                )
            return Figures(elapsed, teardown)
    finally:
        CgroupManager(parent).remove_parent()


@contextlib.asynccontextmanager
async def raw_sandboxes(root: Path, n: int) -> AsyncIterator[list[BwrapProcess]]:
    parent = f"mosaic-bench-raw-{uuid.uuid4().hex[:8]}"
    sandbox = BwrapSandbox(cgroup_parent=parent)
    procs: list[BwrapProcess] = []
    gate = asyncio.Semaphore(16)

    async def start(i: int) -> BwrapProcess:
        work = root / f"raw-{parent}-{i}"
        work.mkdir(parents=True)
        spec = SandboxSpec(
            agent_id=f"raw-{i}",
            argv=["sleep", "300"],
            workdir=work,
            env={"PATH": "/usr/bin:/bin"},
            log_dir=work / ".logs",
            memory_mb=MEMORY_MB,
        )
        async with gate:
            return await sandbox.start(spec)

    try:
        procs = list(await asyncio.gather(*(start(i) for i in range(n))))
        manager = CgroupManager(parent)
        while not all(len(manager.agent(f"raw-{i}").pids()) >= 3 for i in range(n)):
            await asyncio.sleep(0.1)
        yield procs
    finally:
        await asyncio.gather(*(p.cleanup() for p in procs), return_exceptions=True)
        CgroupManager(parent).remove_parent()


def raw_cgroup_kill(cgroup: AgentCgroup) -> None:
    """The bare kernel sequence that empties and removes one agent cgroup."""
    dirs = cgroup.dirs
    if cgroup.layout.version == 2:
        (dirs[0] / "cgroup.kill").write_text("1")
    else:
        freezer = cgroup.layout.v1_mounts["freezer"]
        fdir = next(d for d in dirs if d.is_relative_to(freezer))
        (fdir / "freezer.state").write_text("FROZEN")
        while (fdir / "freezer.state").read_text().strip() != "FROZEN":
            time.sleep(0.001)
        for pid in map(int, (fdir / "cgroup.procs").read_text().split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        (fdir / "freezer.state").write_text("THAWED")
    while any((d / "cgroup.procs").read_text().strip() for d in dirs):
        time.sleep(0.001)
    for d in dirs:
        d.rmdir()


async def raw_baseline(root: Path, n: int) -> float:
    async with raw_sandboxes(root, n) as procs:
        cgroups = [p._cgroup for p in procs]
        t0 = time.perf_counter()
        for proc, cgroup in zip(procs, cgroups, strict=True):
            assert cgroup is not None
            raw_cgroup_kill(cgroup)
            await proc._proc.wait()
        return time.perf_counter() - t0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, nargs="+", default=[50, 200])
    ap.add_argument(
        "--term-grace",
        type=float,
        default=None,
        metavar="S",
        help="also measure a kill-all that sends TERM first and KILL after S seconds",
    )
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    data = Path(tempfile.mkdtemp(prefix="mosaic-bench-valkey-"))
    root = Path(tempfile.mkdtemp(prefix="mosaic-bench-killall-"))
    root.chmod(0o755)
    server = EmbeddedValkey(data)
    await server.start()
    try:
        origin = make_origin(root)
        url = f"unix://{server.socket}"
        cpus = os.cpu_count()
        print(f"kill-all of N live agents (bwrap, `sleep 300`, {MEMORY_MB} MB each, {cpus} CPUs)")
        print("  kill-all: until it returns (all killed, processes and cgroups gone);")
        print("  baseline: bare cgroup kill of as many sandboxes, one after another;")
        print("  teardown: until every worktree is removed too (after kill-all returned)")
        for n in args.agents:
            base = None if args.no_baseline else await raw_baseline(root, n)
            modes: list[tuple[str, float | None]] = [("at once", None)]
            if args.term_grace is not None:
                modes.append((f"TERM, {args.term_grace:g}s grace", args.term_grace))
            for label, grace in modes:
                took = await engine_kill_all(url, root, origin, n, grace)
                line = f"  N={n:4d} {label:18s} kill-all {took.kill_all_s:6.3f} s"
                if base is not None:
                    ratio = took.kill_all_s / base
                    line += f"   baseline {base:6.3f} s   x{ratio:5.2f}"
                line += f"   teardown {took.teardown_s:6.2f} s"
                print(line, flush=True)
    finally:
        await server.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
