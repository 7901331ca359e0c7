"""Fencing and crash recovery on real orchestrator processes (SPEC §19).

Two ``mosaic-orchestrator --headless`` processes share one Valkey (the session's embedded server),
run agents in real bwrap sandboxes under real cgroups, each instance in its own state dir and
cgroup scope. The agent is a command that takes a few seconds and then writes a file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from core.agents import ScriptedModelServer
from core.instance import instance_slug
from core.models import AgentState
from core.store import StateStore
from sandbox.cgroups import CgroupManager
from tests.e2e.gate_repos import declare_no_tools
from tests.faults.instances import Instance, instance_env, paused, start_instance, stop_instance
from tests.faults.procs import agent_processes

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="agents run as the sandbox user: needs root"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
]
SANDBOX_UID = 64000
AGENT = "sleep {s}; echo done > done.txt; echo finished after {s}s"
FENCE_S = 2


@pytest.fixture
def parent() -> Iterator[str]:
    top = f"mosaic-test-{uuid.uuid4().hex[:8]}"
    try:
        yield top
    finally:
        CgroupManager(top).remove_parent()


def settings(parent: str, seconds: int) -> dict[str, Any]:
    return {
        "sandbox_backend": "bwrap",
        "sandbox_cgroup_parent": parent,
        "sandbox_default_memory_mb": 64,
        "mosaic_agent_command": AGENT.format(s=seconds),
        "queue_lock_duration_ms": 2000,
        "queue_stalled_interval_ms": 1000,
        "queue_backoff_ms": 50,
        "fence_s": FENCE_S,
        "kill_grace_s": 1,
        "max_concurrent_agents": 2,
        "orchestrator_queue_concurrency": 2,
    }


async def spawn(http: aiohttp.ClientSession, inst: Instance, task: str, origin: Path) -> str:
    body = {"taskId": task, "agentType": "worker", "context": {"repository": str(origin)}}
    async with http.post(inst.url + "/agents/spawn", json=body) as resp:
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["agentId"])


async def state(redis: aioredis.Redis, agent_id: str) -> AgentState:
    raw = await redis.get(f"orchestrator:agent:{agent_id}")
    assert raw is not None
    return AgentState.model_validate_json(raw)


async def until(predicate: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


def trees(agent_id: str) -> dict[str, set[int]]:
    """The agent's live processes by sandbox cgroup (one cgroup per sandbox tree)."""
    out: dict[str, set[int]] = {}
    for pid in agent_processes(SANDBOX_UID, {agent_id}):
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            continue
        memory = next((ln.split(":", 2)[2] for ln in lines if ":memory:" in ln), lines[0])
        out.setdefault(memory, set()).add(pid)
    return out


def branch_pushes(origin: Path, branch: str) -> int:
    out = subprocess.run(
        ["git", "--git-dir", str(origin), "log", "--format=%H", branch],
        capture_output=True,
        text=True,
    )
    return len(out.stdout.split()) if out.returncode == 0 else 0


async def test_a_paused_owner_is_fenced_and_the_task_completes_once(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path, parent: str
) -> None:
    declare_no_tools(origin, tmp_path)
    config = settings(parent, seconds=16)
    a = start_instance(
        "fence-a", tmp_path / "a", instance_env("fence-a", tmp_path / "a", valkey_url, **config)
    )
    b: Instance | None = None
    try:
        async with aiohttp.ClientSession() as http:
            agent_id = await spawn(http, a, "T-fence", origin)

            async def running_on_a() -> bool:
                s = await state(redis_client, agent_id)
                return s.status.value == "running" and bool(trees(agent_id))

            await until(running_on_a, 60, "the agent running on A")
            first = await state(redis_client, agent_id)
            assert first.instance == "fence-a"
            b = start_instance(
                "fence-b",
                tmp_path / "b",
                instance_env("fence-b", tmp_path / "b", valkey_url, **config),
            )
            with paused(a.proc):  # past the job's lock: B takes the job over

                async def taken_over() -> bool:
                    s = await state(redis_client, agent_id)
                    return (
                        s.instance == "fence-b" and s.fence > first.fence and bool(trees(agent_id))
                    )

                # B's copy runs; A's is frozen, not gone: the danger fencing removes
                await until(taken_over, 30, "B's attempt")
            # A resumes: within FENCE_S it notices, kills its copy and writes nothing
            await asyncio.sleep(FENCE_S + 1)
            live = trees(agent_id)
            assert len(live) == 1, live
            assert instance_slug("fence-b") in next(iter(live))

            async def final() -> bool:
                return (await state(redis_client, agent_id)).status.final

            await until(final, 60, "the task's end")
        done = await state(redis_client, agent_id)
        assert done.status.value == "completed", (
            done.error,
            a.output()[-3000:],
            b.output()[-3000:],
        )
        assert done.instance == "fence-b" and done.attempts >= 2
        assert branch_pushes(origin, "mosaic/worker/T-fence") >= 1
        assert trees(agent_id) == {}
        events = await _events(redis_client, agent_id)
        assert events.count("agent.completed") == 1
        assert "agent.failed" not in events and "agent.killed" not in events
        assert "fenced" in a.output()
    finally:
        for inst in (a, b):
            if inst is not None:
                stop_instance(inst.proc)


async def test_an_instance_killed_mid_run_is_recovered_and_the_task_completes(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path, parent: str
) -> None:
    declare_no_tools(origin, tmp_path)
    config = settings(parent, seconds=4)
    env = instance_env("crash-a", tmp_path / "a", valkey_url, **config)
    a = start_instance("crash-a", tmp_path / "a", env)
    again: Instance | None = None
    try:
        async with aiohttp.ClientSession() as http:
            agent_id = await spawn(http, a, "T-crash", origin)

            async def running() -> bool:
                s = await state(redis_client, agent_id)
                return s.status.value == "running" and bool(trees(agent_id))

            await until(running, 60, "the agent running")
            a.proc.kill()  # SIGKILL: no shutdown, the sandbox dies with it
            a.proc.wait(10)
            await until(lambda: _none(agent_id), 10, "the dead instance's sandbox gone")
            again = start_instance("crash-a", tmp_path / "a", env)  # the same instance, restarted

            async def final() -> bool:
                return (await state(redis_client, agent_id)).status.final

            await until(final, 90, "the task's end")
        done = await state(redis_client, agent_id)
        assert done.status.value == "completed", (done.error, again.output()[-3000:])
        assert done.attempts == 2
        assert branch_pushes(origin, "mosaic/worker/T-crash") >= 1
        assert trees(agent_id) == {}
        assert not list((tmp_path / "a" / "worktrees").glob("*"))
    finally:
        for inst in (a, again):
            if inst is not None:
                stop_instance(inst.proc)


async def _none(agent_id: str) -> bool:
    return not trees(agent_id)


async def _events(redis: aioredis.Redis, agent_id: str) -> list[str]:
    events = await StateStore(redis).events_after("0-0", 100_000)
    return [e.type.value for e in events if e.agent_id == agent_id]


@pytest.mark.skipif(shutil.which("claude") is None, reason="the Claude Code CLI is not installed")
async def test_a_claude_code_agent_whose_instance_died_resumes_its_session(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path, parent: str
) -> None:
    """SPEC §15 + §19: the instance running a Claude Code agent is SIGKILLed mid-session; when it
    comes back, the retry runs ``claude --resume <sessionId>`` (its HOME survived the first
    attempt), so the model gets the first attempt's conversation back, and the task completes."""
    declare_no_tools(origin, tmp_path)
    async with ScriptedModelServer() as scripted:
        config = {
            **settings(parent, seconds=1),
            "mosaic_agent_command": "",
            "mosaic_runtime": "claude-code",
            "anthropic_base_url": scripted.url,
            "claude_api_key": "sk-ant-test-not-a-real-key",
            "sandbox_default_memory_mb": 512,
            "agent_max_wall_s": 120,
        }
        env = instance_env("resume-a", tmp_path / "a", valkey_url, **config)
        a = start_instance("resume-a", tmp_path / "a", env)
        again: Instance | None = None
        try:
            async with aiohttp.ClientSession() as http:
                body = {
                    "taskId": "T-resume",
                    "agentType": "worker",
                    "context": {
                        "repository": str(origin),
                        "instructions": "[script:claude-slow-worker]",
                    },
                }
                async with http.post(a.url + "/agents/spawn", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    agent_id = str((await resp.json())["agentId"])

                async def in_the_long_step() -> bool:  # the second model turn was answered
                    s = await state(redis_client, agent_id)
                    return bool(s.session_id) and len(scripted.requests) >= 2

                await until(in_the_long_step, 90, "the session in its long step")
                session = (await state(redis_client, agent_id)).session_id
                asked = len(scripted.requests)
                a.proc.kill()
                a.proc.wait(10)
                again = start_instance("resume-a", tmp_path / "a", env)

                async def final() -> bool:
                    return (await state(redis_client, agent_id)).status.final

                await until(final, 120, "the task's end")
            done = await state(redis_client, agent_id)
            assert done.status.value == "completed", (done.error, again.output()[-3000:])
            assert done.attempts == 2 and done.session_id == session
            resumed = scripted.requests[asked:]
            assert resumed, "the retry never asked the model"
            roles = [m.get("role") for m in resumed[0].body["messages"]]
            # a new session's first request holds the user's message alone; the resumed one holds
            # the first attempt's turns (how many depends on when the kill came)
            assert roles[0] == "user" and "assistant" in roles, roles
            assert branch_pushes(origin, "mosaic/worker/T-resume") >= 1
            # the first attempt's file (kept when it died) went on in the retry's worktree
            shown = subprocess.run(
                ["git", "--git-dir", str(origin), "show", "mosaic/worker/T-resume:progress.txt"],
                capture_output=True,
                text=True,
            )
            assert shown.stdout == "step 1\n", shown.stderr
        finally:
            for inst in (a, again):
                if inst is not None:
                    stop_instance(inst.proc)
