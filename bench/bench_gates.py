"""Gate-runner overhead: the standard profile through ``LocalGateRunner`` against the same
commands run directly with ``sh -c``, in the same run, on the same sample repository.

    /work/venv/bin/python bench/bench_gates.py [--rounds 5]

Prints the median wall time of each side, their ratio (runner / direct), the wall-time
difference, the runner's own work (wall time minus the time inside the gate commands, which is
immune to the commands' run-to-run noise), and the worst event-loop lag seen while the runner
worked.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.gates import GateContext, LocalGateRunner, SubprocessExecutor  # noqa: E402
from tests.gates.conftest import make_python_repo  # noqa: E402


async def _noop_emit(event: str, data: dict[str, Any]) -> None:
    return None


async def _direct(commands: list[str], repo: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    for command in commands:
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            command,
            cwd=repo,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await proc.communicate()
    return time.perf_counter() - started


async def _through_runner(ctx: GateContext) -> tuple[float, float, list[str]]:
    """Wall time, time spent outside the gate commands (the runner's own work), failures."""
    runner = LocalGateRunner()
    started = time.perf_counter()
    results = [*await runner.run(ctx, "pre"), *await runner.run(ctx, "post")]
    elapsed = time.perf_counter() - started
    bad = [f"{r.name}={r.status}" for r in results if r.status != "passed"]
    return elapsed, elapsed - sum(r.duration_s for r in results), bad


async def _lag_probe(stop: asyncio.Event, worst: list[float]) -> None:
    interval = 0.01
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(interval)
        worst[0] = max(worst[0], time.perf_counter() - before - interval)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        repo = make_python_repo(Path(tmp) / "repo")
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["MYPY_CACHE_DIR"] = str(Path(tmp) / "mypy-cache")
        ctx = GateContext(
            agent_id="bench",
            task_id="bench",
            agent_type="worker",
            profile="standard",
            worktree=repo,
            executor=SubprocessExecutor(env=env),
            emit=_noop_emit,
        )
        # Warm-up (mypy cache, imports) and the commands the runner chose, so both sides match.
        _, _, bad = await _through_runner(ctx)
        if bad:
            raise SystemExit(f"sample repo does not pass the standard profile: {bad}")
        runner = LocalGateRunner()
        results = [*await runner.run(ctx, "pre"), *await runner.run(ctx, "post")]
        commands = [r.command for r in results if r.command]
        print(f"commands: {commands}")
        direct_times: list[float] = []
        runner_times: list[float] = []
        own_times: list[float] = []
        worst_lag = [0.0]
        for i in range(rounds):  # interleaved, order alternating, so noise hits both sides alike
            if i % 2 == 0:
                direct_times.append(await _direct(commands, repo, env))
            stop = asyncio.Event()
            probe = asyncio.create_task(_lag_probe(stop, worst_lag))
            elapsed, own, _ = await _through_runner(ctx)
            stop.set()
            await probe
            runner_times.append(elapsed)
            own_times.append(own)
            if i % 2 == 1:
                direct_times.append(await _direct(commands, repo, env))
    direct = statistics.median(direct_times)
    through = statistics.median(runner_times)
    print(f"rounds: {rounds}")
    print(f"direct sh -c (median):        {direct * 1000:8.1f} ms")
    print(f"LocalGateRunner (median):     {through * 1000:8.1f} ms")
    print(f"ratio runner/direct:          {through / direct:8.3f}")
    print(f"runner overhead per run:      {(through - direct) * 1000:8.1f} ms (wall difference)")
    own = statistics.median(own_times)
    print(f"runner's own work per run:    {own * 1000:8.1f} ms (outside the gate commands)")
    print(f"worst event-loop lag (runner): {worst_lag[0] * 1000:7.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(main(parser.parse_args().rounds))
