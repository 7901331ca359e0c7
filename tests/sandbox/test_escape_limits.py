"""Escape suite, resources: pids, memory and CPU limits hold; kill and parent death leave nothing.

Every payload is bounded by itself (a fixed number of forks, of megabytes) and by a timeout, on
top of the cgroup limits the sandbox applies before the payload starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil

from sandbox.bwrap import BwrapSandbox
from sandbox.cgroups import CgroupManager

from .attack import results
from .conftest import PY_BINDS, PYTHON, Workspace, needs_bwrap

pytestmark = needs_bwrap


async def _wait_for(path: Path, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if path.exists():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


async def test_bounded_fork_bomb_is_stopped_by_pids_max_and_the_loop_stays_responsive(
    ws: Workspace, bwrap_sandbox: BwrapSandbox, needs_cgroups: None
) -> None:
    bomb = textwrap.dedent(
        """
        import json, os, time
        made, refused = 0, 0
        for _ in range(150):  # hard bound: at most 150 forks
            try:
                pid = os.fork()
            except OSError:
                refused += 1
                continue
            if pid == 0:
                time.sleep(20)
                os._exit(0)
            made += 1
        print(json.dumps({"made": made, "refused": refused}), flush=True)
        open("done", "w").close()
        time.sleep(20)
        """
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    proc = await bwrap_sandbox.start(ws.py(bomb, pids_max=24))
    try:
        await _wait_for(ws.worktree / "done")
        ticks_during = ticks
        stats = await proc.stats()
    finally:
        await proc.kill(grace_s=0.2)
        await proc.cleanup()
        tick_task.cancel()
    res = results(ws.stdout())
    assert res["refused"] > 0
    assert res["made"] < 24
    assert stats.pids <= 24
    assert ticks_during > 0  # the orchestrator's loop kept running while the bomb went off
    assert (await proc.stats()).pids <= 24


async def test_memory_hog_is_oom_killed_at_its_limit_and_reported(
    ws: Workspace, run: Any, needs_cgroups: None
) -> None:
    hog = "b = []\nfor _ in range(300):\n    b.append(bytearray(1 << 20))\nprint('survived')"
    rc, stats = await run(ws.py(hog, memory_mb=64))
    assert rc != 0
    assert "survived" not in ws.stdout()
    assert stats.oom_killed


async def test_a_process_within_its_memory_limit_is_not_reported_oom(
    ws: Workspace, run: Any, needs_cgroups: None
) -> None:
    rc, stats = await run(ws.py("b = bytearray(16 << 20)", memory_mb=128))
    assert rc == 0 and not stats.oom_killed


async def test_cpu_quota_is_honoured(ws: Workspace, run: Any, needs_cgroups: None) -> None:
    busy = textwrap.dedent(
        """
        import os, time
        start = time.monotonic()
        kids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                while time.monotonic() - start < 1.0:
                    pass
                os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        print(time.monotonic() - start)
        """
    )
    rc, stats = await run(ws.py(busy, cpu_quota=0.25))
    assert rc == 0, ws.stderr()
    elapsed = float(ws.stdout().strip())
    cores_used = stats.cpu_seconds / elapsed
    # Two busy processes would use up to 2 cores; the quota holds them near 0.25.
    assert 0.02 < cores_used < 0.45, (stats.cpu_seconds, elapsed)


async def test_double_forked_background_process_is_gone_after_kill(
    ws: Workspace, bwrap_sandbox: BwrapSandbox, needs_cgroups: None
) -> None:
    script = "(setsid sleep 300 > /dev/null 2>&1 &); touch ready; exec sleep 300"
    proc = await bwrap_sandbox.start(ws.spec(["/bin/sh", "-c", script]))
    await _wait_for(ws.worktree / "ready")
    cgroup = bwrap_sandbox._cgroups.agent(proc.agent_id)
    members = await asyncio.to_thread(cgroup.pids)
    sleepers = [p for p in members if psutil.Process(p).name() == "sleep"]
    assert len(sleepers) == 2
    await proc.kill(grace_s=0.5)
    await proc.cleanup()
    for pid in sleepers:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not cgroup.exists()


STANDIN = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from sandbox.base import SandboxSpec
from sandbox.bwrap import BwrapSandbox

async def main():
    sb = BwrapSandbox(cgroup_parent={parent!r})
    wt = Path({wt!r})
    spec = SandboxSpec(agent_id="orphaned", workdir=wt, env={{}}, log_dir=Path({logs!r}),
                       argv=["/bin/sh", "-c",
                             "(setsid sleep 300 >/dev/null 2>&1 &); sleep 300 & touch ready; wait"])
    await sb.start(spec)
    await asyncio.sleep(300)

asyncio.run(main())
"""


async def test_everything_dies_within_2s_of_the_orchestrator_being_sigkilled(
    ws: Workspace, cgroup_parent: str, needs_cgroups: None
) -> None:
    parent = f"{cgroup_parent}/standin"
    repo = str(Path(__file__).resolve().parents[2])
    code = STANDIN.format(repo=repo, parent=parent, wt=str(ws.worktree), logs=str(ws.logs))
    orchestrator = subprocess.Popen([sys.executable, "-c", code])
    try:
        await _wait_for(ws.worktree / "ready")
        cgroup = CgroupManager(parent).agent("orphaned")
        members = await asyncio.to_thread(cgroup.pids)
        assert len(members) >= 4  # bwrap, its init, sh, two sleeps
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait(timeout=10)
        for _ in range(100):  # 2 s
            alive = [p for p in members if psutil.pid_exists(p)
                     and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]  # fmt: skip
            if not alive:
                break
            await asyncio.sleep(0.02)
        assert alive == []
        assert await asyncio.to_thread(cgroup.pids) == []
    finally:
        orchestrator.kill()
        orchestrator.wait()
        # The next orchestrator's reconciliation removes the dead agent's cgroup.
        reaped = await BwrapSandbox(cgroup_parent=parent).reap_orphans(set())
    assert reaped == ["orphaned"]
    assert not os.path.exists(cgroup.path)
    assert PYTHON and PY_BINDS is not None
