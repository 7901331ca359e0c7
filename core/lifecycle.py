"""The agent lifecycle state machine (SPEC §6).

``spawning -> running -> completed | failed | killed``, and ``spawning -> failed | killed``.
Every transition stamps its time, writes agent and task state and publishes one event in a single
atomic call (``StateStore.commit``); any other transition is refused and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.errors import IllegalTransition
from core.models import (
    STATUS_EVENT,
    AgentState,
    AgentStatus,
    Event,
    TaskState,
    utcnow,
)
from core.store import StateStore, require

log = logging.getLogger(__name__)

TRANSITIONS: dict[AgentStatus, frozenset[AgentStatus]] = {
    AgentStatus.SPAWNING: frozenset({AgentStatus.RUNNING, AgentStatus.FAILED, AgentStatus.KILLED}),
    AgentStatus.RUNNING: frozenset({AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.KILLED}),
    AgentStatus.COMPLETED: frozenset(),
    AgentStatus.FAILED: frozenset(),
    AgentStatus.KILLED: frozenset(),
}


def can_transition(src: AgentStatus, dst: AgentStatus) -> bool:
    return dst in TRANSITIONS[src]


class Lifecycle:
    def __init__(self, store: StateStore, *, final_ttl_s: int | None = 7 * 24 * 3600) -> None:
        self.store = store
        self.final_ttl_s = final_ttl_s

    async def create(
        self, agent: AgentState, task: TaskState
    ) -> tuple[AgentState, TaskState | None]:
        """Record a new agent in ``spawning`` with its ``agent.spawning`` event.

        Returns ``(agent, None)``, or ``(agent, existing_task)`` when the task already has a live
        agent (nothing is written then).
        """
        event = Event(
            type=STATUS_EVENT[AgentStatus.SPAWNING],
            agent_id=agent.agent_id,
            task_id=agent.task_id,
            timestamp=agent.spawned_at,
            data={"status": "spawning", "agentType": agent.agent_type.value},
        )
        outcome = await self.store.commit(
            agent,
            expected_version=None,
            task=task,
            event=event,
            index_score=agent.spawned_at.timestamp(),
            guard_task=True,
        )
        if outcome.status == "exists":
            return agent, TaskState.model_validate_json(outcome.value)
        require(outcome, f"agent {agent.agent_id}")
        return agent, None

    async def transition(
        self,
        agent_id: str,
        to: AgentStatus,
        *,
        error: str | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> AgentState:
        """Move the agent to ``to``; raise ``IllegalTransition`` if the FSM refuses it."""
        while True:
            cur = await self.store.get_agent(agent_id)
            if not can_transition(cur.status, to):
                log.warning(
                    "refused transition %s -> %s",
                    cur.status.value,
                    to.value,
                    extra={"agent_id": agent_id, "task_id": cur.task_id},
                )
                raise IllegalTransition(
                    f"agent {agent_id} is {cur.status.value}; cannot become {to.value}",
                    details={"from": cur.status.value, "to": to.value},
                )
            now = utcnow()
            update: dict[str, Any] = {**fields, "status": to, "version": cur.version + 1}
            if to is AgentStatus.RUNNING:
                update["started_at"] = now
            if to.final:
                update["completed_at"] = now
            if error is not None:
                update["error"] = error
            new = cur.model_copy(update=update)
            task = await self.store.get_task(cur.task_id)
            if task is not None and task.agent_id == agent_id:
                task = task.model_copy(
                    update={
                        "status": to,
                        "updated_at": now,
                        "result": new.result,
                        "attempts": new.attempts,
                    }
                )
            else:
                task = None
            payload: dict[str, Any] = {"status": to.value, **(data or {})}
            if error is not None:
                payload["error"] = error
            event = Event(
                type=STATUS_EVENT[to],
                agent_id=agent_id,
                task_id=cur.task_id,
                timestamp=now,
                data=payload,
            )
            outcome = await self.store.commit(
                new,
                expected_version=cur.version,
                task=task,
                event=event,
                ttl_s=self.final_ttl_s if to.final else None,
            )
            if outcome.status == "ok":
                log.info(
                    "agent %s -> %s",
                    agent_id,
                    to.value,
                    extra={"agent_id": agent_id, "task_id": cur.task_id},
                )
                return new
            if outcome.status == "missing":
                require(outcome, f"agent {agent_id}")

    async def update(
        self, agent_id: str, mutate: Callable[[AgentState], dict[str, Any]]
    ) -> AgentState:
        """Change non-status fields (usage, resources, pid...) without an event."""
        while True:
            cur = await self.store.get_agent(agent_id)
            changes = mutate(cur)
            if not changes:
                return cur
            if "status" in changes:
                raise IllegalTransition("status changes go through transition()")
            new = cur.model_copy(update={**changes, "version": cur.version + 1})
            outcome = await self.store.commit(
                new,
                expected_version=cur.version,
                ttl_s=self.final_ttl_s if cur.status.final else None,
            )
            if outcome.status == "ok":
                return new
            if outcome.status == "missing":
                require(outcome, f"agent {agent_id}")
