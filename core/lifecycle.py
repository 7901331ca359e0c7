"""The agent lifecycle state machine (SPEC §6).

``spawning -> running -> completed | failed | killed``, and ``spawning -> failed | killed``.
Every transition stamps its time, writes agent and task state and publishes one event in a single
atomic call (``StateStore.commit``); any other transition is refused and logged.

On a durable store (the run pipeline's, SPEC §19) a write that met a Valkey outage is retried
until Valkey is back. A retried compare-and-set may find its own first try applied (the server
ran it, the answer was lost): a conflict whose stored state is exactly the one written is that
write's success, not a concurrent change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from core.errors import IllegalTransition, NotFound
from core.models import (
    STATUS_EVENT,
    AgentState,
    AgentStatus,
    Event,
    TaskState,
    utcnow,
)
from core.store import CommitOutcome, StateStore, Write, require

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
        if not _applied(outcome, agent):
            require(outcome, f"agent {agent.agent_id}")
        return agent, None

    async def transition(
        self,
        agent_id: str,
        to: AgentStatus,
        *,
        error: str | None = None,
        data: dict[str, Any] | None = None,
        guard: Callable[[AgentState], None] | None = None,
        **fields: Any,
    ) -> AgentState:
        """Move the agent to ``to``; raise ``IllegalTransition`` if the FSM refuses it.
        ``guard`` sees the current state first and may refuse the write (an attempt's fence)."""
        while True:
            cur = await self.store.get_agent(agent_id)
            if guard is not None:
                guard(cur)
            self._check(cur, to)
            task = await self.store.get_task(cur.task_id)
            new, task, event = self._step(cur, task, to, error, data, fields)
            outcome = await self.store.commit(
                new,
                expected_version=cur.version,
                task=task,
                event=event,
                ttl_s=self.final_ttl_s if to.final else None,
            )
            if outcome.status == "ok" or _applied(outcome, new):
                self._log(new)
                return new
            if outcome.status == "missing":
                require(outcome, f"agent {agent_id}")

    async def transition_many(
        self,
        agents: list[AgentState],
        to: AgentStatus,
        *,
        error: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> list[AgentState | Exception]:
        """``transition`` of many agents, in order, in two round trips: their tasks are read
        together and the commits pipelined (each one still atomic with its event).

        ``agents`` are their last known states; one that changed since (its commit meets another
        version) goes through ``transition``. Each result is the new state or the exception
        ``transition`` would have raised (``IllegalTransition``, ``NotFound``...).
        """
        results: list[AgentState | Exception | None] = [None] * len(agents)
        writes: list[Write] = []
        pending: list[int] = []
        tasks = await self.store.get_tasks([a.task_id for a in agents])
        for i, (cur, task) in enumerate(zip(agents, tasks, strict=True)):
            try:
                self._check(cur, to)
            except IllegalTransition as exc:
                results[i] = exc
                continue
            new, task, event = self._step(cur, task, to, error, data, {})
            ttl = self.final_ttl_s if to.final else None
            writes.append(Write(new, cur.version, task, event, ttl))
            pending.append(i)
        outcomes = await self.store.commit_many(writes)
        again: list[int] = []
        for i, write, outcome in zip(pending, writes, outcomes, strict=True):
            if outcome.status == "ok" or _applied(outcome, write.agent):
                self._log(write.agent)
                results[i] = write.agent
            elif outcome.status == "missing":
                results[i] = NotFound(f"agent {write.agent.agent_id} not found")
            else:  # it changed since it was read
                again.append(i)
        retried = await asyncio.gather(
            *(self.transition(agents[i].agent_id, to, error=error, data=data) for i in again),
            return_exceptions=True,
        )
        for i, result in zip(again, retried, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            results[i] = result
        return [r for r in results if r is not None]

    @staticmethod
    def _step(
        cur: AgentState,
        task: TaskState | None,
        to: AgentStatus,
        error: str | None,
        data: dict[str, Any] | None,
        fields: dict[str, Any],
    ) -> tuple[AgentState, TaskState | None, Event]:
        """The agent's next state, its task's and the event (the move is legal)."""
        agent_id = cur.agent_id
        now = utcnow()
        update: dict[str, Any] = {**fields, "status": to, "version": cur.version + 1}
        if to is AgentStatus.RUNNING:
            update["started_at"] = now
        if to.final:
            update["completed_at"] = now
        if error is not None:
            update["error"] = error
        new = cur.model_copy(update=update)
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
        return new, task, event

    @staticmethod
    def _check(cur: AgentState, to: AgentStatus) -> None:
        if not can_transition(cur.status, to):
            log.warning(
                "refused transition %s -> %s",
                cur.status.value,
                to.value,
                extra={"agent_id": cur.agent_id, "task_id": cur.task_id},
            )
            raise IllegalTransition(
                f"agent {cur.agent_id} is {cur.status.value}; cannot become {to.value}",
                details={"from": cur.status.value, "to": to.value},
            )

    @staticmethod
    def _log(new: AgentState) -> None:
        log.info(
            "agent %s -> %s",
            new.agent_id,
            new.status.value,
            extra={"agent_id": new.agent_id, "task_id": new.task_id},
        )

    async def update(
        self,
        agent_id: str,
        mutate: Callable[[AgentState], dict[str, Any]],
        *,
        guard: Callable[[AgentState], None] | None = None,
    ) -> AgentState:
        """Change non-status fields (usage, resources, pid...) without an event; ``guard`` as
        in ``transition``."""
        while True:
            cur = await self.store.get_agent(agent_id)
            if guard is not None:
                guard(cur)
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
            if outcome.status == "ok" or _applied(outcome, new):
                return new
            if outcome.status == "missing":
                require(outcome, f"agent {agent_id}")


def _applied(outcome: CommitOutcome, written: AgentState) -> bool:
    """A conflict that is this very write, applied by an earlier try whose answer was lost
    (only a write sent again after an outage can meet itself)."""
    return (
        outcome.retried
        and outcome.status == "conflict"
        and outcome.value == written.model_dump_json()
    )
