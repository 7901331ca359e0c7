"""The orchestrator as a process: CLI, settings errors, restarts, recovery of a dead instance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from core.settings import load_settings
from mosaic_tui.cli import main
from tests.spine.conftest import make_settings, running


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VALKEY", "ORCHESTRATOR"))}
    env.update({"MOSAIC_STATE_DIR": str(tmp_path / "state"), "SANDBOX_BACKEND": "none"})
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("ORCHESTRATOR_PORT", "not-a-port", "ORCHESTRATOR_PORT"),
        ("ORCHESTRATOR_PORT", "70000", "ORCHESTRATOR_PORT"),
        ("MAX_CONCURRENT_AGENTS", "0", "MAX_CONCURRENT_AGENTS"),
        ("SANDBOX_BACKEND", "chroot", "SANDBOX_BACKEND"),
        ("SANDBOX_ENABLED", "maybe", "SANDBOX_ENABLED"),
        ("COORDINATOR_URL", "coordinator:9000", "COORDINATOR_URL"),
    ],
)
def test_invalid_setting_stops_startup_with_one_line(
    tmp_path: Path, var: str, value: str, needle: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mosaic_tui", "--headless"],
        env=_env(tmp_path, **{var: value}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr


def test_sandbox_disabled_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_ENABLED", "false")
    monkeypatch.setenv("SANDBOX_BACKEND", "bwrap")
    assert load_settings().sandbox_backend == "none"


def test_defaults_match_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ORCHESTRATOR", "VALKEY", "MAX_CONCURRENT", "SANDBOX")):
            monkeypatch.delenv(name)
    s = load_settings()
    assert s.orchestrator_port == 3001
    assert s.max_concurrent_agents == 2 and s.orchestrator_queue_concurrency == 1
    assert s.sandbox_default_memory_mb == 256 and s.embedded_valkey


def test_scan_subcommand_is_wired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean.py"
    clean.write_text("x = 1\n")
    assert main(["scan", str(clean)]) == 0
    assert main(["scan"]) == 2


async def _wait_line(proc: asyncio.subprocess.Process, needle: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("process ended before printing " + needle)
            if needle in line:
                return line


async def _spawn_until_running(
    http: aiohttp.ClientSession, port: int, task_id: str, origin: Path
) -> str:
    base = f"http://127.0.0.1:{port}"
    body = {"taskId": task_id, "agentType": "worker", "context": {"repository": str(origin)}}
    async with http.post(f"{base}/agents/spawn", json=body) as resp:
        agent_id = str((await resp.json())["agentId"])
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"{base}/agents/{agent_id}/status") as resp:
                if (await resp.json())["status"] == "running":
                    return agent_id
            await asyncio.sleep(0.05)


async def test_headless_serves_then_stops_cleanly_on_sigterm(tmp_path: Path, origin: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mosaic_tui",
        "--headless",
        "--port",
        "0",
        env=_env(tmp_path, MOSAIC_AGENT_COMMAND="sleep 300"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        line = await _wait_line(proc, "API on")
        port = int(line.rsplit(":", 1)[1])
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("redis-server" in " ".join(c.cmdline()) for c in children)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health/ready") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["checks"]["valkey"]["embedded"] is True
            await _spawn_until_running(http, port, "T-cli", origin)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        _gone, alive = psutil.wait_procs(descendants, timeout=5)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_state_survives_a_restart_on_the_embedded_server(
    tmp_path: Path, origin: Path
) -> None:
    settings = make_settings(tmp_path, valkey_url="", valkey_host=None)
    assert settings.embedded_valkey
    async with running(settings) as orch:
        agent_id = await orch.spawn("T-persist", origin)
        first = await orch.wait_status(agent_id, "completed")
    async with running(settings) as orch:
        status, again = await orch.get(f"/agents/{agent_id}/status")
        assert status == 200
        assert again == first


async def test_dead_instance_job_is_recovered_by_another_instance(
    tmp_path: Path, origin: Path, valkey_url: str, redis_client: Any
) -> None:
    env = _env(
        tmp_path,
        VALKEY_URL=valkey_url,
        MOSAIC_STATE_DIR=str(tmp_path / "dead"),
        MOSAIC_AGENT_COMMAND="sleep 1; echo recovered-run",
        QUEUE_LOCK_DURATION_MS="1500",
        QUEUE_STALLED_INTERVAL_MS="500",
    )
    dead = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mosaic_tui", "--headless", "--port", "0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        line = await _wait_line(dead, "API on")
        port = int(line.rsplit(":", 1)[1])
        async with aiohttp.ClientSession() as http:
            agent_id = await _spawn_until_running(http, port, "T-orphan", origin)
        dead.kill()  # the instance dies without any cleanup
        await dead.wait()
    finally:
        if dead.returncode is None:
            dead.kill()
            await dead.wait()
    settings = make_settings(
        tmp_path,
        valkey_url,
        mosaic_agent_command="echo recovered-run",
        queue_lock_duration_ms=1500,
        queue_stalled_interval_ms=500,
    )
    async with running(settings) as orch:
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
        assert data["status"] == "completed", data
        assert data["summary"] == "recovered-run"
        assert data["instance"] == orch.engine.instance
