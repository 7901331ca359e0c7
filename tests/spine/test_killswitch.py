"""The killswitch's batch state step: many agents killed in a few round trips, each atomically."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from core.errors import IllegalTransition, NotFound
from core.lifecycle import Lifecycle
from core.models import AgentState, AgentStatus
from core.store import AUDIT, STREAM, StateStore
from tests.spine.conftest import agent_pair


async def test_transition_many_kills_each_agent_with_its_event(
    lifecycle: Lifecycle, redis_client: aioredis.Redis
) -> None:
    known: list[AgentState] = []
    for i in range(5):
        agent, task = agent_pair(f"a{i}", f"T-a{i}")
        await lifecycle.create(agent, task)
        known.append(await lifecycle.transition(agent.agent_id, AgentStatus.RUNNING))
    # known states go stale: a4 changed since (a monitor update), a3 ended, a2 vanished
    await lifecycle.update("a4", lambda a: {"pid": 4242})
    await lifecycle.transition("a3", AgentStatus.COMPLETED)
    await redis_client.delete("orchestrator:agent:a2")
    stream_before = await redis_client.xlen(STREAM)

    results = await lifecycle.transition_many(
        known, AgentStatus.KILLED, error="killed by op", data={"by": "op", "graceS": 0}
    )

    killed = [r for r in results if isinstance(r, AgentState)]
    assert [a.agent_id for a in killed] == ["a0", "a1", "a4"]
    assert isinstance(results[2], NotFound) and isinstance(results[3], IllegalTransition)
    for agent in killed:
        stored = await lifecycle.store.get_agent(agent.agent_id)
        assert stored == agent and stored.status is AgentStatus.KILLED
        assert stored.error == "killed by op" and stored.completed_at is not None
        task = await lifecycle.store.get_task(agent.task_id)
        assert task is not None and task.status is AgentStatus.KILLED
    assert (await lifecycle.store.get_agent("a4")).pid == 4242  # the newer state was the base
    assert (await lifecycle.store.get_agent("a3")).status is AgentStatus.COMPLETED
    entries = await redis_client.xrange(STREAM)
    events = [json.loads(fields[b"e"]) for _, fields in entries[stream_before:]]
    assert sorted(e["agentId"] for e in events) == ["a0", "a1", "a4"]
    assert {e["type"] for e in events} == {"agent.killed"}
    assert all(e["data"] == {"status": "killed", "by": "op", "graceS": 0, "error": "killed by op"}
               for e in events)  # fmt: skip
    assert await redis_client.ttl("orchestrator:agent:a0") > 0  # final states expire


async def test_transition_many_of_nothing_is_nothing(lifecycle: Lifecycle) -> None:
    assert await lifecycle.transition_many([], AgentStatus.KILLED) == []


async def test_audit_records_keep_their_order(redis_client: aioredis.Redis) -> None:
    store = StateStore(redis_client)
    await store.audit_many([{"what": "kill", "n": i} for i in range(3)])
    await store.audit_many([])
    assert [r["n"] for r in await store.audit_records()] == [2, 1, 0]
    assert await redis_client.xlen(AUDIT) == 3
