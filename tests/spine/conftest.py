"""An orchestrator (engine + API server on loopback) per test, on the session's Redis server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core.api import serve
from core.engine import Engine
from core.lifecycle import Lifecycle
from core.models import AgentState, AgentType, Event, GateProfile, SpawnRequest, TaskState
from core.settings import Settings, load_settings
from core.store import StateStore


@dataclass
class Orchestrator:
    engine: Engine
    settings: Settings
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=body, **kw) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.http.get(self.url + path, **kw) as resp:
            return resp.status, await resp.json()

    async def spawn(self, task_id: str, repository: Path | str, **extra: Any) -> str:
        body = {
            "taskId": task_id,
            "agentType": extra.pop("agentType", "worker"),
            "context": {
                "repository": str(repository),
                "branch": "main",
                **extra.pop("context", {}),
            },
            **extra,
        }
        status, data = await self.post("/agents/spawn", body)
        assert status == 202, data
        return str(data["agentId"])

    async def wait_status(
        self, agent_id: str, *statuses: str, timeout: float = 30
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            code, data = await self.get(f"/agents/{agent_id}/status")
            assert code == 200, data
            if data["status"] in statuses:
                return dict(data)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"agent {agent_id} stuck in {data}")
            await asyncio.sleep(0.05)

    async def sse(
        self,
        path: str = "/agents/events",
        *,
        headers: dict[str, str] | None = None,
        until: Callable[[list[Event]], bool],
        timeout: float = 30,
    ) -> list[Event]:
        events: list[Event] = []
        async with self.http.get(self.url + path, headers=headers or {}) as resp:
            assert resp.status == 200
            async with asyncio.timeout(timeout):
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("data: "):
                        events.append(Event.model_validate(json.loads(line[6:])))
                        if until(events):
                            break
        return events


def make_settings(tmp_path: Path, valkey_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "valkey_url": valkey_url,
        "mosaic_state_dir": tmp_path / "state",
        "sandbox_backend": "none",
        "orchestrator_port": 0,
        "queue_backoff_ms": 50,
        "queue_stalled_interval_ms": 1000,
        "queue_lock_duration_ms": 2000,
        "kill_grace_s": 1.0,
        "mosaic_agent_command": "echo working; echo done-summary",
        "max_concurrent_agents": 2,
        "orchestrator_queue_concurrency": 2,
        # whatever the machine's environment holds, tests choose their model explicitly
        "claude_api_key": None,
        "anthropic_api_key": None,
        "anthropic_base_url": None,
        "coordinator_url": None,
        "orchestrator_api_key": None,
    }
    values.update(overrides)
    return load_settings(**values)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Orchestrator]:
    async with (
        Engine.running(settings) as engine,
        serve(
            engine,
            host="127.0.0.1",
            port=0,
            api_key=settings.orchestrator_api_key,
            max_body_bytes=settings.max_body_bytes,
        ) as runner,
        aiohttp.ClientSession() as http,
    ):
        host, port = runner.addresses[0][:2]
        yield Orchestrator(engine, settings, f"http://{host}:{port}", http)


OrchestratorFactory = Callable[..., contextlib.AbstractAsyncContextManager[Orchestrator]]


@pytest.fixture
def orchestrator_factory(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis
) -> OrchestratorFactory:
    def factory(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Orchestrator]:
        return running(make_settings(tmp_path, valkey_url, **overrides))

    return factory


@pytest_asyncio.fixture
async def orch(orchestrator_factory: OrchestratorFactory) -> AsyncIterator[Orchestrator]:
    async with orchestrator_factory() as o:
        yield o


def agent_pair(agent_id: str = "a1", task_id: str = "T-1") -> tuple[AgentState, TaskState]:
    """A new worker's state and its task's, for tests that drive the lifecycle directly."""
    agent = AgentState(
        agent_id=agent_id,
        task_id=task_id,
        agent_type=AgentType.WORKER,
        gate_profile=GateProfile.STANDARD,
    )
    request = SpawnRequest.model_validate(
        {"taskId": task_id, "agentType": "worker", "context": {"repository": "/tmp/x"}}
    )
    return agent, TaskState(task_id=task_id, agent_id=agent_id, request=request)


@pytest.fixture
def lifecycle(redis_client: aioredis.Redis) -> Lifecycle:
    return Lifecycle(StateStore(redis_client))
