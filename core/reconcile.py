"""Start-up reconciliation: nothing a crashed run left behind survives the next start.

Agents this instance was running have no process any more (sandboxes die with the
orchestrator). They are not failed: their jobs are still active in the queue under the dead
worker's lock, and once the lock expires the queue's stalled-job check hands them to whichever
instance takes them next, which starts a new attempt (SPEC §19, crash recovery; the spawner caps
the attempts). What their attempts left on this host goes now: their sandboxes are reaped and their
worktrees removed, their work kept first (``refs/mosaic/kept/<agentId>``). Sandboxes and worktrees
that belong to no live agent are removed too.

``sweep_lost`` fails the live agents whose job the queue no longer holds (it gave up on a job
that stalled too often, or the job is gone), so that nothing stays ``running`` forever.

Only this instance's own things are touched: agents whose ``instance`` is this one, worktrees under
its state directory, and sandboxes in its scope (the sandbox is built for
``<SANDBOX_CGROUP_PARENT>/<instance slug>``, see ``core/instance.py``), so another instance's
agents on the same host survive even when this instance's Valkey has never heard of them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.errors import IllegalTransition, NotFound
from core.gc import keep_orphans
from core.git import prune_worktrees
from core.lifecycle import Lifecycle
from core.models import AgentStatus
from core.paths import StatePaths
from core.store import StateStore
from sandbox import Sandbox

log = logging.getLogger(__name__)


async def reconcile(
    *,
    store: StateStore,
    lifecycle: Lifecycle,
    sandbox: Sandbox,
    paths: StatePaths,
    instance: str,
    author: tuple[str, str] = ("Mosaic Orchestrator", "orchestrator@mosaic.local"),
) -> list[str]:
    agents = await store.list_agents(limit=100_000)
    crashed = [
        a.agent_id for a in agents if not a.status.final and a.instance == instance
    ]  # their processes died with this instance; their jobs come back through the queue
    live = {a.agent_id for a in agents if not a.status.final} - set(crashed)
    reaped = await sandbox.reap_orphans(live)
    keep = {paths.worktree(agent_id) for agent_id in live}
    # an orphan's work is kept (refs/mosaic/kept/<agentId>) before its worktree goes
    removed: list[Path] = await prune_worktrees(
        paths.repos, keep, before_remove=keep_orphans(paths, author)
    )
    if crashed or reaped or removed:
        log.warning(
            "reconciled: %d agent(s) lost their process (their jobs will be retried), "
            "%d sandbox(es) and %d worktree(s) removed",
            len(crashed),
            len(reaped),
            len(removed),
        )
    return crashed


JobState = Callable[[str], Awaitable[str | None]]


async def sweep_lost(store: StateStore, lifecycle: Lifecycle, job_state: JobState) -> list[str]:
    """Fail live agents whose job the queue no longer runs nor will run."""
    lost: list[str] = []
    for agent in await store.list_agents(limit=100_000):
        if agent.status.final:
            continue
        state = await job_state(agent.agent_id)
        if state not in ("completed", "failed", "unknown", None):
            continue
        with contextlib.suppress(IllegalTransition, NotFound):
            await lifecycle.transition(
                agent.agent_id,
                AgentStatus.FAILED,
                error=f"queue: the agent's job is {state or 'gone'}; its process was lost",
            )
            lost.append(agent.agent_id)
    if lost:
        log.warning("%d agent(s) whose job was lost marked failed", len(lost))
    return lost
