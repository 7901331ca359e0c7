"""Credentials in a repository URL never reach the sandbox, a status, an event or a log (SPEC §17).

The origin is a real smart-HTTP server on loopback that requires basic auth; the engine is
spawned with ``http://deploy:TOKEN@127.0.0.1:PORT/origin.git``. The agent, in the bwrap sandbox,
hunts for the token everywhere it can look and prints what it found; its branch must still reach
the origin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.models import Event
from tests.e2e.gate_repos import declare_no_tools
from tests.git.http_origin import serve_origin
from tests.spine.conftest import OrchestratorFactory


def probe(token: str) -> str:
    """The agent: look for ``token`` wherever a sandboxed process can look, report each hit.

    The token is assembled in a shell variable from two halves, so that neither the command line
    (``/bin/sh -c ...``, visible in ``/proc``) nor the environment carries it; the pattern file
    sits in a directory the search skips.
    """
    half = len(token) // 2
    return f"""
T="{token[:half]}""{token[half:]}"
mkdir -p /tmp/.probe && printf '%s\\n' "$T" > /tmp/.probe/p && unset T
P=/tmp/.probe/p
found() {{ echo "FOUND in $1"; }}
env | grep -qF -f $P && found env
git config -l > /tmp/.probe/config 2>&1
echo "git config -l: exit $?: $(head -c 300 /tmp/.probe/config)"
grep -qF -f $P /tmp/.probe/config && found 'git config -l'
echo "git status: $(git status --short 2>&1 | head -c 200)"
git status > /tmp/.probe/status 2>&1; grep -qF -f $P /tmp/.probe/status && found 'git status'
echo "cat .git: $(cat .git 2>&1 | head -c 300)"
cat .git 2>/dev/null | grep -qF -f $P && found .git
gitdir=$(sed -n 's/^gitdir: //p' .git 2>/dev/null)
echo "visible of the admin dir: $(ls -A "$gitdir" 2>&1 | tr '\\n' ' ')"
echo "visible of the clone: $(ls -A "$gitdir/../.." 2>&1 | tr '\\n' ' ')"
for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do
  grep -qaF -f $P "$f" 2>/dev/null && found "$f"
done
set --
for d in /* /.[!.]*; do
  case "$d" in /proc|/sys|/dev|'/.[!.]*') ;; *) set -- "$@" "$d" ;; esac
done
timeout 150 grep -rlaF -f $P --exclude-dir=.probe "$@" > /tmp/.probe/hits 2> /tmp/.probe/errors
echo "grep -r over $*: exit $? (0 found, 1 nothing, 2 nothing but unreadable entries, 124 timeout)"
echo "unreadable: $(wc -l < /tmp/.probe/errors), e.g. $(head -n 3 /tmp/.probe/errors | tr '\n' ' ')"
while read -r hit; do found "$hit"; done < /tmp/.probe/hits
echo probe > probe.txt
echo probe-finished
"""


def files_holding(root: Path, needle: bytes) -> list[Path]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if not path.is_symlink() and path.is_file() and needle in path.read_bytes():
                found.append(path)
    return found


async def valkey_keys_holding(redis: aioredis.Redis, needle: str) -> list[str]:
    """Every Valkey key whose value (whatever its type) contains ``needle``."""
    holding = []
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value: object = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1)
        elif kind == "set":
            value = await redis.smembers(key)
        else:
            continue
        if needle in repr(value):
            holding.append(key)
    return holding


async def test_token_is_nowhere_in_the_sandbox_and_nowhere_shown(
    orchestrator_factory: OrchestratorFactory,
    origin: Path,
    cgroup: str,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    declare_no_tools(origin, tmp_path)  # no code to check: gates would block the push
    caplog.set_level(logging.DEBUG)
    token = "tok-" + secrets.token_hex(20)
    events: list[Event] = []
    with serve_origin(origin, user="deploy", token=token) as served:
        async with orchestrator_factory(
            mosaic_agent_command=probe(token),
            sandbox_backend="bwrap",
            sandbox_cgroup_parent=cgroup,
            agent_max_wall_s=240,
        ) as orch:

            async def collect() -> None:
                done = {"agent.completed", "agent.failed"}
                events.extend(await orch.sse(until=lambda e: e[-1].type.value in done, timeout=240))

            listener = asyncio.create_task(collect())
            await asyncio.sleep(0.3)
            agent_id = await orch.spawn("T-cred", served.url)
            data = await orch.wait_status(agent_id, "completed", "failed", timeout=240)
            await asyncio.wait_for(listener, 20)
            state = orch.settings.mosaic_state_dir
            holding = await valkey_keys_holding(redis_client, token)

    report = (state / "agents" / agent_id / "stdout.log").read_text()
    print(report)  # what in-sandbox git and the search saw, for whoever reads the test output
    assert "probe-finished" in report, report
    assert "FOUND" not in report, report
    search = re.search(r"grep -r over .*: exit (\d+)", report)
    assert search and search.group(1) in ("1", "2"), report  # no hit, and no timeout

    # the agent's branch reached the authenticated origin
    assert data["status"] == "completed", data
    assert data["result"]["pushed"] is True
    assert "mosaic/worker/T-cred" in served.branches()
    assert served.show("mosaic/worker/T-cred:probe.txt") == "probe\n"

    # nothing the orchestrator shows or keeps on disk carries the token
    shown = json.dumps(data) + "".join(e.wire() for e in events) + caplog.text
    assert token not in shown
    assert {"git.committed", "git.pushed"} <= {e.type.value for e in events}
    assert files_holding(state, token.encode()) == []  # clone cache, worktrees, agent logs
    # Valkey: only the task record (the spawn request itself, kept for retries) holds the URL
    assert holding in ([], ["orchestrator:task:T-cred"]), holding
