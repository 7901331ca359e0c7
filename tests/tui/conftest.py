"""Dashboard fixtures: a real engine (session Redis, `none` sandbox, shell agents)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core.engine import Engine
from core.models import AgentState, AgentStatus, SpawnRequest
from core.settings import Settings
from tests.spine.conftest import make_settings, orchestrator_factory

__all__ = ["orchestrator_factory"]  # re-exported fixture (attach tests)

LONG_AGENT = "echo working-line; sleep 30"


@pytest.fixture(autouse=True)
def _colour(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots and styles need colour: ``NO_COLOR`` in the environment would strip it."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TEXTUAL", raising=False)


@pytest.fixture
def settings(tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis) -> Settings:
    return make_settings(tmp_path, valkey_url, mosaic_agent_command=LONG_AGENT)


@pytest_asyncio.fixture
async def engine(settings: Settings) -> AsyncIterator[Engine]:
    async with Engine.running(settings) as running:
        yield running


def request(task_id: str, origin: Path, **extra: Any) -> SpawnRequest:
    return SpawnRequest.model_validate(
        {
            "taskId": task_id,
            "agentType": extra.pop("agentType", "worker"),
            "context": {"repository": str(origin), "branch": "main"},
            **extra,
        }
    )


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 30, what: str = ""
) -> None:
    """Wait (polling) until ``condition`` holds; fail naming ``what`` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)


async def wait_status(engine: Any, agent_id: str, *statuses: AgentStatus) -> AgentState:
    state: list[AgentState] = []

    async def reached() -> bool:
        state[:] = [await engine.status(agent_id)]
        return state[0].status in statuses

    await until(reached, what=f"agent {agent_id} to reach {statuses}")
    return state[0]


@contextlib.contextmanager
def no_leftover(pid: int | None) -> Any:
    yield
    if pid is None:
        return
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"pid {pid} still runs"
