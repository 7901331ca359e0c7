"""End-to-end: the real orchestrator, the real SDK in a bwrap sandbox, the scripted model."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core.agents import ScriptedModelServer
from sandbox.cgroups import CgroupManager
from tests.spine.conftest import Orchestrator, make_settings, orchestrator_factory, running

__all__ = ["orchestrator_factory"]

FAKE_KEY = "sk-ant-api03-" + "TESTKEY" * 6 + "-canary"


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def claude_factory(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, scripted: ScriptedModelServer
) -> Callable[..., contextlib.AbstractAsyncContextManager[Orchestrator]]:
    def factory(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Orchestrator]:
        values: dict[str, Any] = {
            "mosaic_agent_command": None,
            "anthropic_base_url": scripted.url,
            "claude_api_key": FAKE_KEY,
            "sandbox_backend": "bwrap",
            "sandbox_cgroup_parent": f"mosaic-test-{uuid.uuid4().hex[:8]}",
            "agent_max_wall_s": 60,
        }
        values.update(overrides)
        return running(make_settings(tmp_path, valkey_url, **values))

    return factory


@pytest_asyncio.fixture
async def claude(
    claude_factory: Callable[..., contextlib.AbstractAsyncContextManager[Orchestrator]],
) -> AsyncIterator[Orchestrator]:
    async with claude_factory() as orch:
        yield orch


@pytest.fixture
def cgroup() -> Iterator[str]:
    """The test's own top cgroup parent, removed (with anything left in it) at the end."""
    top = f"mosaic-test-{uuid.uuid4().hex[:8]}"
    try:
        yield top
    finally:
        CgroupManager(top).remove_parent()
