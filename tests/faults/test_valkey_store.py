"""The store across a Valkey outage (SPEC §19), on a real redis-server paused with SIGSTOP.

A durable store's write waits for Valkey and lands once it is back (one write, one event); a fast
store's read fails within seconds; shutdown ends the waiting.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator

import pytest_asyncio

from core.lifecycle import Lifecycle
from core.models import AgentStatus
from core.store import STREAM, UNREACHABLE, StateStore
from core.valkey import ValkeyEndpoint, ValkeyWatch
from tests.faults.test_valkey_outage import external_valkey, paused
from tests.spine.conftest import agent_pair

__all__ = ["external_valkey"]  # the fixture, shared with the engine-level outage tests


@pytest_asyncio.fixture
async def watched(
    external_valkey: tuple[subprocess.Popen[bytes], str],
) -> AsyncIterator[tuple[int, StateStore, ValkeyWatch]]:
    proc, url = external_valkey
    endpoint = ValkeyEndpoint({"unix_socket_path": url.removeprefix("unix://")}, url, False)
    client = endpoint.client()
    watch = ValkeyWatch(endpoint, interval_s=0.2, timeout_s=0.5)
    task = asyncio.create_task(watch.run())
    try:
        yield proc.pid, StateStore(client, availability=watch), watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watch.aclose()
        await client.aclose()


async def until(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_a_durable_write_waits_out_a_pause_and_lands_once(
    watched: tuple[int, StateStore, ValkeyWatch],
) -> None:
    pid, store, watch = watched
    lifecycle = Lifecycle(store.durable_twin())
    agent, task = agent_pair("agent-outage", "T-outage")
    await lifecycle.create(agent, task)
    await lifecycle.transition(agent.agent_id, AgentStatus.RUNNING)
    with paused(pid):
        await until(lambda: not watch.up, 5)
        write = asyncio.create_task(lifecycle.transition(agent.agent_id, AgentStatus.COMPLETED))
        await asyncio.sleep(3)
        assert not write.done()  # waiting, not failed
        start = time.monotonic()
        try:  # the API's (fast) store fails within seconds
            await store.get_agent(agent.agent_id)
            raise AssertionError("a read on a paused Valkey answered")
        except UNREACHABLE:
            assert time.monotonic() - start < 6
    done = await asyncio.wait_for(write, 15)
    assert done.status is AgentStatus.COMPLETED
    await until(lambda: watch.up, 5)  # the watch sees it back too
    stored = await store.get_agent(agent.agent_id)
    assert stored.status is AgentStatus.COMPLETED and stored.version == done.version
    kinds = [
        f[b"e"].decode() for _, f in await store.redis.xrange(STREAM) if b"agent-outage" in f[b"e"]
    ]
    assert sum('"type":"agent.completed"' in k for k in kinds) == 1


async def test_shutdown_ends_the_waiting(watched: tuple[int, StateStore, ValkeyWatch]) -> None:
    pid, store, watch = watched
    durable = store.durable_twin()
    agent, task = agent_pair("agent-shutdown", "T-shutdown")
    await Lifecycle(store).create(agent, task)
    with paused(pid):
        await until(lambda: not watch.up, 5)
        read = asyncio.create_task(durable.get_agent(agent.agent_id))
        await asyncio.sleep(1)
        assert not read.done()
        store.stop_waiting(grace_s=0.5)  # the twin shares the switch
        try:
            await asyncio.wait_for(read, 10)
            raise AssertionError("the durable read answered from a paused Valkey")
        except UNREACHABLE:
            pass
