"""The killswitch: kill one agent or all of them, with an audit record of who, when, what, outcome.

Killing moves the agent to ``killed`` first (atomically, so nothing else can complete it), then asks
its run to stop the sandbox and removes its job if it is still queued. The run owns its sandbox:
it kills the whole cgroup and releases it, then its exit stack keeps the agent's work and removes
the worktree (and the branch unless pushed). Agents that run on another instance are stopped by
that instance, which sees the ``agent.killed`` event (its ``graceS``, when present, says how: 0 is
at once).

**Kill one** (``kill``): TERM, then KILL after ``KILL_GRACE_S`` (SPEC §12); it returns once the
agent's run has ended, worktree removed.

**Kill all** (``kill_all``) is the operator's emergency stop (SPEC §19: 50 live agents gone, with
their cgroups, within 1 s). It kills *at once*: no TERM and no grace. A grace would be waited out
in full by any agent that ignores TERM (5 s by default, where the budget is 1 s), and it buys the
agent nothing the orchestrator uses: a killed agent's work is never committed to its branch nor
pushed, and what its worktree holds is kept as it is (``refs/mosaic/kept/``). Every live agent is
handled together, in three steps:

1. state: all of them ``killed``, in two Valkey round trips (tasks read together, the commits
   pipelined; each commit is still atomic with its ``agent.killed`` event);
2. processes: every local run is told at once and kills its whole cgroup (on threads of the
   sandbox's own, ``sandbox.cgroups.in_kill_thread``); jobs still queued are removed meanwhile;
   kill-all waits until each local sandbox is gone, processes and cgroup;
3. audit: one record per agent and one for the kill-all, pipelined.

It does not wait for the worktrees: each run keeps its agent's work and removes its worktree after
its sandbox is gone, a few at a time (``core.run.workspace``), one at a time per repository (its
lock);
the engine waits for them at shutdown.
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
from core.run import Spawner
from core.store import StateStore

log = logging.getLogger(__name__)

KILL_ALL_GRACE_S = 0.0
"""Kill-all kills at once (see the module's doc)."""
QUEUE_CONCURRENCY = 16
"""Queued jobs a kill-all removes at once (each is a few queue round trips)."""
STOP_MARGIN_S = 10.0
"""How long past the grace a kill waits for the agent's run before reporting it still stopping."""
STILL_STOPPING = "kill requested; process still stopping"


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
        self._queue_calls = asyncio.Semaphore(QUEUE_CONCURRENCY)

    async def kill(self, agent_id: str, *, who: str) -> AgentState:
        """Kill one agent: TERM, grace, KILL; returns once its run has ended."""
        agent = await self.store.get_agent(agent_id)
        if agent.status.final:
            return agent
        try:
            killed = await self.lifecycle.transition(
                agent_id, AgentStatus.KILLED, error=f"killed by {who}", data={"by": who}
            )
        except IllegalTransition:  # it ended meanwhile: its final state stands
            return await self.store.get_agent(agent_id)
        outcome = "killed"
        run = self.spawner.request_kill(agent_id)
        if run is not None:
            try:
                await asyncio.wait_for(run.done.wait(), self.grace_s + STOP_MARGIN_S)
            except TimeoutError:
                outcome = STILL_STOPPING
        elif agent.status is not AgentStatus.RUNNING:
            await self._remove_queued(agent_id)
        await self._audit([self._record(who, "kill", agent_id, outcome)])
        return killed

    async def kill_all(self, *, who: str, grace_s: float = KILL_ALL_GRACE_S) -> KillAllResult:
        """Kill every live agent together (see the module's doc); returns once every local
        agent's sandbox is gone. ``grace_s`` > 0 sends TERM first (the benchmark measures it)."""
        await self.store.emit(
            Event(type=EventType.KILLSWITCH_ACTIVATED, data={"by": who, "scope": "all"})
        )
        live = [a for a in await self.store.list_agents(limit=100_000) if a.status in LIVE_STATUSES]
        moved = await self.lifecycle.transition_many(
            live,
            AgentStatus.KILLED,
            error=f"killed by {who}",
            data={"by": who, "graceS": grace_s},  # how other instances stop theirs
        )
        outcomes: dict[str, str] = {}
        errors: list[dict[str, Any]] = []
        stops = []
        for agent, result in zip(live, moved, strict=True):
            if isinstance(result, AgentState):
                outcomes[agent.agent_id] = "killed"
                stops.append(self._stop(agent, grace_s, outcomes))
            elif not isinstance(result, IllegalTransition | NotFound):  # else: ended meanwhile
                errors.append({"agentId": agent.agent_id, "error": str(result)})
        await asyncio.gather(*stops)
        failed = len(errors)
        killed = len(live) - failed
        records = [self._record(who, "kill", a, outcome) for a, outcome in outcomes.items()]
        records.append(self._record(who, "kill-all", None, f"{killed} killed, {failed} failed"))
        await self._audit(records)
        return KillAllResult(
            message=f"Kill all completed: {killed} killed, {failed} failed",
            total=len(live),
            killed=killed,
            failed=failed,
            errors=errors,
        )

    async def _stop(self, agent: AgentState, grace_s: float, outcomes: dict[str, str]) -> None:
        """Have a killed agent stopped: its local run told (then its sandbox awaited), or its job
        removed if it may still be queued. A local run's job is active, and so is a running
        agent's elsewhere (a recovered agent's delayed retry skips itself, as does any job whose
        agent is final)."""
        run = self.spawner.request_kill(agent.agent_id, grace_s=grace_s)
        if run is None:
            if agent.status is not AgentStatus.RUNNING:
                await self._remove_queued(agent.agent_id)
            return
        try:
            await asyncio.wait_for(run.stopped.wait(), grace_s + STOP_MARGIN_S)
        except TimeoutError:
            outcomes[agent.agent_id] = STILL_STOPPING

    async def _remove_queued(self, agent_id: str) -> None:
        try:
            async with self._queue_calls:
                await self.queue.remove_pending(agent_id)
        except Exception as exc:  # the queue may be unreachable; the job then skips itself
            log.warning("could not remove queued job: %s", exc, extra={"agent_id": agent_id})

    @staticmethod
    def _record(who: str, what: str, agent_id: str | None, outcome: str) -> dict[str, Any]:
        record = {
            "who": who,
            "when": utcnow().isoformat(),
            "what": what,
            "agentId": agent_id,
            "outcome": outcome,
        }
        log.info("audit: %s", record)
        return record

    async def _audit(self, records: list[dict[str, Any]]) -> None:
        try:
            await self.store.audit_many(records)
        except Exception as exc:
            log.error("audit records not written: %s (%s)", exc, records)
