"""Fail closed: with the cgroup hierarchy hidden, the bwrap backend refuses agents.

The orchestrator runs as a real process in a private mount namespace of its own (``unshare -m``)
whose cgroup mounts are unmounted, so the host's cgroups are untouched. Without usable cgroups,
``/health/ready`` is 503 naming the reason and a spawn is refused; ``SANDBOX_ALLOW_NO_CGROUPS``
is the only way around it, and then rlimits and the size-limited /tmp still bound the agent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="hiding cgroups needs a mount namespace (root)"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
]

HIDE_CGROUPS = (
    "umount -R -l /sys/fs/cgroup 2>/dev/null; "
    "if grep -q ' cgroup' /proc/self/mountinfo; then echo 'cgroups still mounted' >&2; exit 3; fi; "
    'exec "$@"'
)


async def _orchestrator(tmp_path: Path, **env: str) -> AsyncIterator[tuple[str, Any]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VALKEY", "SANDBOX"))}
    base.update(MOSAIC_STATE_DIR=str(tmp_path / "state"), SANDBOX_BACKEND="bwrap", **env)
    proc = await asyncio.create_subprocess_exec(
        "unshare", "-m", "--propagation", "private", "sh", "-c", HIDE_CGROUPS, "hide",
        sys.executable, "-m", "mosaic_tui", "--headless", "--port", "0",
        env=base, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while b"API on" not in (line := await proc.stdout.readline()):
                assert line, "the orchestrator ended before serving"
        port = int(line.decode().rsplit(":", 1)[1])
        async with aiohttp.ClientSession() as http:
            yield f"http://127.0.0.1:{port}", http
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_no_cgroups_means_not_ready_and_no_agent(tmp_path: Path, origin: Path) -> None:
    gen = _orchestrator(tmp_path, MOSAIC_AGENT_COMMAND="echo should-never-run")
    url, http = await gen.__anext__()
    try:
        async with http.get(f"{url}/health/ready") as resp:
            body = await resp.json()
        assert resp.status == 503, body
        sandbox = body["checks"]["sandbox"]
        assert sandbox["ok"] is False
        assert "no usable cgroups" in sandbox["detail"]
        assert "SANDBOX_ALLOW_NO_CGROUPS" in sandbox["detail"]
        spawn = {
            "taskId": "T-closed",
            "agentType": "worker",
            "context": {"repository": str(origin)},
        }
        async with http.post(f"{url}/agents/spawn", json=spawn) as resp:
            refused = await resp.json()
        assert resp.status == 503, refused
        assert "cgroups" in refused["error"]["message"]
        async with http.get(f"{url}/agents") as resp:
            assert (await resp.json())["agents"] == []  # nothing was created
    finally:
        await gen.aclose()


# Forks up to 40 sleeps (a bounded loop of shell builtins: a failed fork ends the subshell and
# the count it reached stays in /tmp/n), kills them, then tries to write 100 MiB into /tmp.
AGENT = r"""
( n=0; while [ $n -lt 40 ]; do sleep 5 & n=$((n+1)); echo $n > /tmp/n; done; wait ) 2>/dev/null
kill -9 -1 2>/dev/null; wait
read forked < /tmp/n
head -c 104857600 /dev/zero 2>/dev/null > /tmp/fill
echo "forked=$forked tmp_mb=$(du -m /tmp/fill | cut -f1)"
"""


async def test_allowing_no_cgroups_still_bounds_processes_and_tmp(
    tmp_path: Path, origin: Path
) -> None:
    gen = _orchestrator(
        tmp_path,
        SANDBOX_ALLOW_NO_CGROUPS="true",
        SANDBOX_PIDS_MAX="10",
        SANDBOX_DISK_MB="16",
        MOSAIC_AGENT_COMMAND=AGENT,
        PUSH_NON_WORKERS="false",
    )
    url, http = await gen.__anext__()
    try:
        async with http.get(f"{url}/health/ready") as resp:
            body = await resp.json()
        assert resp.status == 200, body
        assert any("rlimits only" in d for d in body["checks"]["sandbox"]["degraded"])
        spawn = {"taskId": "T-open", "agentType": "tester", "context": {"repository": str(origin)}}
        async with http.post(f"{url}/agents/spawn", json=spawn) as resp:
            agent_id = (await resp.json())["agentId"]
        async with asyncio.timeout(90):
            while True:
                async with http.get(f"{url}/agents/{agent_id}/status") as resp:
                    status = await resp.json()
                if status["status"] in ("completed", "failed", "killed"):
                    break
                await asyncio.sleep(0.1)
        summary = status.get("summary") or ""
        assert "forked=" in summary, (status.get("error"), status.get("result"))
        fields = dict(kv.split("=") for kv in summary.split())
        assert 1 <= int(fields["forked"]) < 10  # RLIMIT_NPROC of the sandbox user
        assert int(fields["tmp_mb"]) <= 16  # /tmp is a 16 MiB tmpfs
    finally:
        await gen.aclose()
