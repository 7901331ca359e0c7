"""Fencing (SPEC §19): at most one live attempt per agent, and none once another owns it.

Each attempt takes the agent's fencing token when it starts: ``fence`` in the agent's state,
raised by one compare-and-set write that also records the owner instance. Every state write of
the attempt is guarded by that token (a write that finds another token raises ``Fenced``, and the
compare-and-set makes the check and the write one step), and a watcher reads the token every
quarter of ``FENCE_S`` (or of the job's lock, when shorter). When another attempt took the agent
over, when the agent became final, or when the attempt could not confirm its token for longer
than the job's lock lasts (paused past the lock, cut off from Valkey: another instance may own
the job now), the attempt is fenced: its whole process tree is killed at once, and it commits,
pushes and writes nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from core.errors import OrchestratorError
from core.lifecycle import Lifecycle
from core.models import AgentState, AgentStatus
from core.store import StateStore

log = logging.getLogger(__name__)


class Fenced(OrchestratorError):
    """This attempt no longer owns its agent: it must not write, commit or push."""

    code = "fenced"


def guard_for(token: int) -> Callable[[AgentState], None]:
    def guard(current: AgentState) -> None:
        if current.fence != token:
            raise Fenced(
                f"agent {current.agent_id} is owned by attempt {current.fence} "
                f"of {current.instance or 'another instance'}, not {token}"
            )

    return guard


class RunLifecycle:
    """The lifecycle as one attempt may use it: every write guarded by its token."""

    def __init__(self, lifecycle: Lifecycle, token: int) -> None:
        self.lifecycle = lifecycle
        self.token = token
        self.guard = guard_for(token)

    async def update(
        self, agent_id: str, mutate: Callable[[AgentState], dict[str, Any]]
    ) -> AgentState:
        return await self.lifecycle.update(agent_id, mutate, guard=self.guard)

    async def transition(self, agent_id: str, to: AgentStatus, **kwargs: Any) -> AgentState:
        return await self.lifecycle.transition(agent_id, to, guard=self.guard, **kwargs)


async def take_over(
    lifecycle: Lifecycle, agent_id: str, instance: str, changes: dict[str, Any]
) -> AgentState:
    """Raise the agent's token for a new attempt owned by ``instance`` (one atomic write)."""
    return await lifecycle.update(
        agent_id, lambda a: {**changes, "fence": a.fence + 1, "instance": instance}
    )


async def verify(store: StateStore, agent_id: str, token: int) -> None:
    """Raise ``Fenced`` unless the attempt still owns the agent (before a commit or a push)."""
    current = await store.find_agent(agent_id)
    if current is None or current.fence != token or current.status.final:
        raise Fenced(f"agent {agent_id}: attempt {token} no longer owns it")


async def watch(
    store: StateStore,
    agent_id: str,
    token: int,
    *,
    fence_s: float,
    lease_s: float,
    on_lost: Callable[[str], None],
    on_final: Callable[[str], None] | None = None,
) -> None:
    """Check the token every ``fence_s / 4``; when the attempt lost its agent (see the module's
    doc) call ``on_lost(reason)`` once and return (``on_final(reason)`` when the agent simply
    became final)."""
    interval = max(0.05, min(fence_s, lease_s) / 4)
    confirmed = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        try:
            async with asyncio.timeout(interval):
                current = await store.find_agent(agent_id)
        except Exception as exc:  # unreachable, paused, any client error: unconfirmed
            if time.monotonic() - confirmed > lease_s:
                why = str(exc) or type(exc).__name__
                on_lost(f"could not confirm ownership for {lease_s:g}s: {why}")
                return
            continue
        if current is None:
            on_lost("the agent's state is gone")
            return
        if current.fence != token:
            on_lost(f"attempt {current.fence} on {current.instance} took the agent over")
            return
        if current.status.final:  # killed elsewhere (its event missed): stop, it is not a fence
            (on_final or on_lost)(f"the agent is {current.status.value}")
            return
        if time.monotonic() - confirmed > lease_s:  # a pause longer than the lease
            on_lost(f"paused for more than {lease_s:g}s: another instance may own the job")
            return
        confirmed = time.monotonic()
