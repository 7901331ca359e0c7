"""The lifecycle FSM: legal transitions only, each writing state and its event together."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from core.errors import IllegalTransition, NotFound
from core.lifecycle import TRANSITIONS, Lifecycle, can_transition
from core.models import AgentState, AgentStatus
from core.store import CHANNEL, STREAM
from tests.spine.conftest import agent_pair

LEGAL = [
    ("spawning", "running"),
    ("spawning", "failed"),
    ("spawning", "killed"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "killed"),
]


def test_transition_table_is_exactly_the_spec() -> None:
    legal = {(s.value, d.value) for s in AgentStatus for d in AgentStatus if can_transition(s, d)}
    assert legal == set(LEGAL)
    for final in (AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.KILLED):
        assert TRANSITIONS[final] == frozenset()


@pytest.mark.parametrize(("src", "dst"), LEGAL)
async def test_legal_transitions_write_state_and_event(
    lifecycle: Lifecycle, redis_client: aioredis.Redis, src: str, dst: str
) -> None:
    agent, task = agent_pair()
    await lifecycle.create(agent, task)
    if src == "running":
        await lifecycle.transition("a1", AgentStatus.RUNNING)
    new = await lifecycle.transition(
        "a1", AgentStatus(dst), error="boom" if dst == "failed" else None
    )
    stored = await lifecycle.store.get_agent("a1")
    assert stored.status.value == dst == new.status.value
    task_state = await lifecycle.store.get_task("T-1")
    assert task_state is not None and task_state.status.value == dst
    if dst == "running":
        assert stored.started_at is not None and stored.completed_at is None
    else:
        assert stored.completed_at is not None
    entries = await redis_client.xrange(STREAM)
    last = json.loads(entries[-1][1][b"e"])
    assert last["type"] == f"agent.{dst}"
    assert last["agentId"] == "a1" and last["taskId"] == "T-1"
    if dst == "failed":
        assert last["data"]["error"] == "boom" and stored.error == "boom"


@pytest.mark.parametrize(
    ("path", "dst"),
    [
        ([], AgentStatus.COMPLETED),
        ([], AgentStatus.SPAWNING),
        ([AgentStatus.RUNNING], AgentStatus.SPAWNING),
        ([AgentStatus.RUNNING], AgentStatus.RUNNING),
        ([AgentStatus.RUNNING, AgentStatus.COMPLETED], AgentStatus.FAILED),
        ([AgentStatus.KILLED], AgentStatus.RUNNING),
        ([AgentStatus.FAILED], AgentStatus.KILLED),
    ],
)
async def test_illegal_transitions_are_refused_without_side_effects(
    lifecycle: Lifecycle, redis_client: aioredis.Redis, path: list[AgentStatus], dst: AgentStatus
) -> None:
    agent, task = agent_pair()
    await lifecycle.create(agent, task)
    for step in path:
        await lifecycle.transition("a1", step)
    before = await lifecycle.store.get_agent("a1")
    events_before = await redis_client.xlen(STREAM)
    with pytest.raises(IllegalTransition):
        await lifecycle.transition("a1", dst)
    assert await lifecycle.store.get_agent("a1") == before
    assert await redis_client.xlen(STREAM) == events_before


async def test_transition_of_unknown_agent_is_not_found(lifecycle: Lifecycle) -> None:
    with pytest.raises(NotFound):
        await lifecycle.transition("nope", AgentStatus.RUNNING)


async def test_event_is_published_with_its_stream_id(
    lifecycle: Lifecycle, redis_client: aioredis.Redis
) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1)  # subscribe confirmation
    agent, task = agent_pair()
    await lifecycle.create(agent, task)
    message = None
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            break
    await pubsub.aclose()
    assert message is not None
    event = json.loads(message["data"])
    entries = await redis_client.xrange(STREAM)
    assert event["id"] == entries[-1][0].decode()
    assert event["type"] == "agent.spawning"


async def test_concurrent_final_transitions_only_one_wins(lifecycle: Lifecycle) -> None:
    agent, task = agent_pair()
    await lifecycle.create(agent, task)
    await lifecycle.transition("a1", AgentStatus.RUNNING)
    results = await asyncio.gather(
        lifecycle.transition("a1", AgentStatus.COMPLETED),
        lifecycle.transition("a1", AgentStatus.KILLED),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, AgentState)]
    assert len(winners) == 1
    assert isinstance(next(r for r in results if r not in winners), IllegalTransition)
    assert (await lifecycle.store.get_agent("a1")).status is winners[0].status


async def test_second_live_agent_for_a_task_is_not_created(lifecycle: Lifecycle) -> None:
    agent, task = agent_pair("a1")
    await lifecycle.create(agent, task)
    other, other_task = agent_pair("a2")
    _, existing = await lifecycle.create(other, other_task)
    assert existing is not None and existing.agent_id == "a1"
    with pytest.raises(NotFound):
        await lifecycle.store.get_agent("a2")


async def test_update_keeps_concurrent_changes(lifecycle: Lifecycle) -> None:
    agent, task = agent_pair()
    await lifecycle.create(agent, task)
    await asyncio.gather(
        *(lifecycle.update("a1", lambda a, i=i: {"attempts": a.attempts + 1}) for i in range(10))
    )
    assert (await lifecycle.store.get_agent("a1")).attempts == 10
