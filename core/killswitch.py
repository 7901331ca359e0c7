"""The killswitch: kill one agent or all of them, with an audit record of who, when, what, outcome.

Killing moves the agent to ``killed`` first (atomically, so nothing else can complete it), removes
a queued job, then stops the process: TERM, grace, KILL of its whole sandbox; the spawner's exit
stack removes the worktree (and the branch unless pushed). Agents that run on another instance are
stopped by that instance, which sees the ``agent.killed`` event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.engine_api import KillAllResult
from core.errors import IllegalTransition, NotFound
from core.lifecycle import Lifecycle
from core.models import LIVE_STATUSES, AgentState, AgentStatus, Event, EventType, utcnow
from core.queue import TaskQueue
from core.spawner import Spawner
from core.store import StateStore

log = logging.getLogger(__name__)


class Killswitch:
    def __init__(
        self,
        *,
        store: StateStore,
        lifecycle: Lifecycle,
        queue: TaskQueue,
        spawner: Spawner,
        grace_s: float,
    ) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.queue = queue
        self.spawner = spawner
        self.grace_s = grace_s

    async def kill(self, agent_id: str, *, who: str) -> AgentState:
        agent = await self.store.get_agent(agent_id)
        if agent.status.final:
            return agent
        outcome = "killed"
        try:
            agent = await self.lifecycle.transition(
                agent_id, AgentStatus.KILLED, error=f"killed by {who}", data={"by": who}
            )
        except IllegalTransition:
            return await self.store.get_agent(agent_id)
        try:
            await self.queue.remove_pending(agent_id)
        except Exception as exc:  # the queue may be unreachable; the job then skips itself
            log.warning("could not remove queued job: %s", exc, extra={"agent_id": agent_id})
        if self.spawner.request_kill(agent_id) is not None:
            stopped = await self.spawner.wait_stopped(agent_id, self.grace_s + 10)
            outcome = "killed" if stopped else "kill requested; process still stopping"
        await self._audit(who, "kill", agent_id, outcome)
        return agent

    async def kill_all(self, *, who: str) -> KillAllResult:
        await self.store.emit(
            Event(type=EventType.KILLSWITCH_ACTIVATED, data={"by": who, "scope": "all"})
        )
        live = [a for a in await self.store.list_agents(limit=100_000) if a.status in LIVE_STATUSES]
        errors: list[dict[str, Any]] = []

        async def one(agent: AgentState) -> bool:
            try:
                await self.kill(agent.agent_id, who=who)
                return True
            except NotFound:
                return True  # gone meanwhile: nothing left to kill
            except Exception as exc:
                errors.append({"agentId": agent.agent_id, "error": str(exc)})
                return False

        results = await asyncio.gather(*(one(a) for a in live))
        killed = sum(results)
        failed = len(results) - killed
        await self._audit(who, "kill-all", None, f"{killed} killed, {failed} failed")
        return KillAllResult(
            message=f"Kill all completed: {killed} killed, {failed} failed",
            total=len(live),
            killed=killed,
            failed=failed,
            errors=errors,
        )

    async def _audit(self, who: str, what: str, agent_id: str | None, outcome: str) -> None:
        record = {
            "who": who,
            "when": utcnow().isoformat(),
            "what": what,
            "agentId": agent_id,
            "outcome": outcome,
        }
        log.info("audit: %s", record)
        try:
            await self.store.audit(record)
        except Exception as exc:
            log.error("audit record not written: %s (%s)", exc, record)
