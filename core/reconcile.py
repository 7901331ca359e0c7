"""Start-up reconciliation: nothing a crashed run left behind survives the next start.

Agents this instance recorded as running have no process any more (sandboxes die with the
orchestrator): they are marked failed. Sandboxes (cgroups, containers) and worktrees that belong
to no live agent are removed.

Only this instance's own things are touched: agents whose ``instance`` is this one, worktrees under
its state directory, and sandboxes in its scope (the sandbox is built for
``<SANDBOX_CGROUP_PARENT>/<instance slug>``, see ``core/instance.py``), so another instance's
agents on the same host survive even when this instance's Valkey has never heard of them.
"""

from __future__ import annotations

import contextlib
import logging
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
    failed: list[str] = []
    agents = await store.list_agents(limit=100_000)
    for agent in agents:
        if agent.status is AgentStatus.RUNNING and agent.instance == instance:
            with contextlib.suppress(IllegalTransition, NotFound):
                await lifecycle.transition(
                    agent.agent_id,
                    AgentStatus.FAILED,
                    error="orchestrator restarted: the agent's process was lost",
                )
                failed.append(agent.agent_id)
    live = {a.agent_id for a in agents if a.status.final is False and a.agent_id not in failed}
    reaped = await sandbox.reap_orphans(live)
    keep = {paths.worktree(agent_id) for agent_id in live}
    # an orphan's work is kept (refs/mosaic/kept/<agentId>) before its worktree goes
    removed: list[Path] = await prune_worktrees(
        paths.repos, keep, before_remove=keep_orphans(paths, author)
    )
    if failed or reaped or removed:
        log.warning(
            "reconciled: %d agent(s) marked failed, %d sandbox(es) and %d worktree(s) removed",
            len(failed),
            len(reaped),
            len(removed),
        )
    return failed
