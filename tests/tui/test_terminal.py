"""The real command in a real terminal (tmux): dashboard + engine + API in one process."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import psutil
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is needed to give the dashboard a terminal"
)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


async def _screen_until(session: str, pattern: str, timeout: float = 60) -> str:
    screen = ""
    try:
        async with asyncio.timeout(timeout):
            while True:
                screen = _tmux("capture-pane", "-p", "-t", session)
                if re.search(pattern, screen):
                    return screen
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"never saw {pattern!r} on the screen:\n{screen}") from None


def _start_dashboard(tmp_path: Path, width: int, height: int) -> str:
    """``mosaic-orchestrator`` (dashboard, engine and API) in a new tmux session; its name."""
    session = f"mosaic-{uuid.uuid4().hex[:8]}"
    env = {
        "MOSAIC_STATE_DIR": str(tmp_path / "state"),
        "MOSAIC_AGENT_COMMAND": "echo on-screen; sleep 120",
        "SANDBOX_BACKEND": "none",
        "ORCHESTRATOR_PORT": "0",
        "TERM": "xterm-256color",
    }
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = f"env -u NO_COLOR {exports} {shlex.quote(sys.executable)} -m mosaic_tui"
    _tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command)
    return session


async def _spawn_on_screen(session: str, origin: Path, task: str) -> int:
    """Spawn ``task`` through the dashboard process's API and wait until it shows running;
    the process's pid."""
    screen = await _screen_until(session, r"API http://127\.0\.0\.1:\d+")
    port = re.search(r"API http://127\.0\.0\.1:(\d+)", screen).group(1)  # type: ignore[union-attr]
    pid = int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
    body = {"taskId": task, "agentType": "worker", "context": {"repository": str(origin)}}
    url = f"http://127.0.0.1:{port}/agents/spawn"
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        assert resp.status == 202
    await _screen_until(session, rf"{task} .*running")
    return pid


async def test_local_dashboard_spawns_kills_and_quits_cleanly(tmp_path: Path, origin: Path) -> None:
    session = _start_dashboard(tmp_path, 160, 48)
    try:
        pid = await _spawn_on_screen(session, origin, "TERM-1")
        _tmux("send-keys", "-t", session, "k")
        await _screen_until(session, r"(?i)kill")
        _tmux("send-keys", "-t", session, "y")
        await _screen_until(session, r"TERM-1 .*killed")
        descendants = psutil.Process(pid).children(recursive=True)
        _tmux("send-keys", "-t", session, "q")
        async with asyncio.timeout(30):
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                await asyncio.sleep(0.2)
        _gone, alive = psutil.wait_procs(descendants, timeout=5)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert os.path.isdir(tmp_path / "state" / "valkey")  # the embedded server kept its data


async def test_quitting_with_a_live_agent_stops_the_engine_thread_and_the_agent(
    tmp_path: Path, origin: Path
) -> None:
    """The engine runs on its own thread: quitting (after the question) still stops it, which
    kills the live agent, and the process ends."""
    session = _start_dashboard(tmp_path, 120, 40)
    try:
        pid = await _spawn_on_screen(session, origin, "TERM-2")
        agents = [p for p in psutil.Process(pid).children(recursive=True) if "sleep" in p.name()]
        assert agents, "the agent's process runs under the dashboard"
        _tmux("send-keys", "-t", session, "q")
        await _screen_until(session, r"(?i)quit")
        _tmux("send-keys", "-t", session, "y")
        async with asyncio.timeout(30):
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                await asyncio.sleep(0.2)
        _gone, alive = psutil.wait_procs(agents, timeout=5)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
