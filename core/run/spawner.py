"""The spawner: runs one attempt of one agent through explicit stages.

workspace (cached clone + worktree) -> launch (the runtime's session in its sandbox) -> follow
(monitor, activity, kill requests) -> finish (commit, gates, scan, conflict check, push) ->
cleanup. One ``RunContext`` carries the attempt through the stages. Every resource is registered
on an ``AsyncExitStack`` as soon as it exists, so success, failure, kill and cancellation all
release it. The spawner owns the instance's live-agent slots; it never asks which runtime it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from core.diskusage import DiskBudget
from core.errors import AgentFailure, IllegalTransition, NotFound, NotReady, OrchestratorError
from core.git.secrets import mask_data, mask_text
from core.lifecycle import Lifecycle
from core.logtail import last_line, tail_lines
from core.models import AgentResult, AgentStatus, Event, EventType
from core.net import EgressProxy
from core.paths import StatePaths
from core.queue import GiveUp, RetryLater
from core.run.context import RunContext
from core.run.egress import open_egress
from core.run.fence import Fenced, RunLifecycle, take_over
from core.run.fence import watch as watch_fence
from core.run.finish import Finisher
from core.run.launch import SandboxPolicy
from core.run.monitor import Monitor
from core.run.runtimes.base import Runtimes
from core.run.workspace import Workspace, WorkspaceManager
from core.settings import CONFIG_DIR, Settings
from core.store import StateStore
from sandbox import Sandbox, SandboxError, SandboxProcess
from sandbox.toolchains import path_directories, toolchain_binds

log = logging.getLogger(__name__)

FOLLOW_DRAIN_S = 5.0
"""How long the follower may take, once the session ended, to report the rest of its output."""


class Spawner:
    def __init__(
        self,
        *,
        settings: Settings,
        store: StateStore,
        lifecycle: Lifecycle,
        sandbox: Sandbox,
        workspaces: WorkspaceManager,
        runtimes: Runtimes,
        finisher: Finisher,
        paths: StatePaths,
        instance: str,
        proxy: EgressProxy | None = None,
        admission: Callable[[float], Awaitable[bool]] | None = None,
        model_held: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.lifecycle = lifecycle
        self.sandbox = sandbox
        self.workspaces = workspaces
        self.runtimes = runtimes
        self.finisher = finisher
        self.paths = paths
        self.instance = instance
        self.proxy = proxy
        self.admission = admission
        self.model_held = model_held
        """True while the model's shared rate limit holds requests (agents are not stuck)."""
        """``(deadline) -> started``: waits while the model's rate limit holds."""
        self.live: dict[str, RunContext] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_agents)
        self.toolchains = toolchain_binds(
            [*path_directories(os.environ.get("PATH")), *settings.sandbox_toolchains],
            hidden=[paths.root, paths.worktrees, CONFIG_DIR],
        )
        """What every sandbox of this instance sees of the operator's toolchains."""

    # -- kill ----------------------------------------------------------------------------------
    def request_kill(self, agent_id: str, *, grace_s: float | None = None) -> RunContext | None:
        """Ask the agent's run to stop: TERM, then KILL after ``grace_s`` (default
        ``KILL_GRACE_S``; 0 kills at once). A later request may only shorten the grace."""
        run = self.live.get(agent_id)
        if run is not None:
            if grace_s is not None and (run.kill_grace_s is None or grace_s < run.kill_grace_s):
                run.kill_grace_s = grace_s
            run.kill_requested.set()
        return run

    def _grace(self, run: RunContext) -> float:
        return self.settings.kill_grace_s if run.kill_grace_s is None else run.kill_grace_s

    async def _stop(self, run: RunContext, process: SandboxProcess) -> None:
        await process.kill(self._grace(run))

    async def wait_stopped(self, agent_id: str, timeout: float) -> bool:
        run = self.live.get(agent_id)
        if run is None:
            return True
        try:
            await asyncio.wait_for(run.done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- the job -------------------------------------------------------------------------------
    async def run(self, agent_id: str, attempt: int, max_attempts: int) -> dict[str, Any]:
        agent = await self.store.find_agent(agent_id)
        if agent is None or agent.status.final:
            return {"skipped": f"agent is {agent.status.value if agent else 'gone'}"}
        task = await self.store.get_task(agent.task_id)
        if task is None or task.agent_id != agent_id:
            await self._fail(agent_id, "task state missing")
            return {"skipped": "task state missing"}
        async with self._slots:
            run = RunContext(
                agent,
                task.request,
                attempt,
                max_attempts,
                self.paths.agent_dir(agent_id),
                runtime=self.runtimes.name_for(agent.runtime or task.request.runtime),
            )
            self.live[agent_id] = run
            final = True
            try:
                return await self._attempt(run)
            except Fenced as exc:  # another attempt owns the agent: nothing more is written
                final = False
                log.warning("attempt fenced: %s", exc.message, extra={"agent_id": agent_id})
                return {"status": "fenced", "reason": exc.message}
            except (RetryLater, asyncio.CancelledError):
                final = False  # another attempt follows (or the job is recovered later)
                raise
            except GiveUp:
                raise
            except Exception as exc:  # a bug must fail the agent, never leave it "running"
                log.exception("agent run crashed", extra={"agent_id": agent_id})
                await self._fail(agent_id, mask_text(f"internal: {type(exc).__name__}: {exc}"))
                raise GiveUp(mask_text(f"internal error: {exc}")) from exc
            finally:
                self.live.pop(agent_id, None)
                if final:  # no attempt follows: what the attempts shared goes
                    with contextlib.suppress(KeyError, NotReady):
                        runtime = self.runtimes.get(run.runtime)
                        await asyncio.to_thread(runtime.forget, agent_id)
                run.stopped.set()
                run.done.set()

    async def _attempt(self, run: RunContext) -> dict[str, Any]:
        agent = run.agent
        recovered = agent.status is AgentStatus.RUNNING
        if recovered:  # its instance died (or lost it) mid-run: this is a new attempt
            run.attempt = max(run.attempt, agent.attempts + 1)
        await self.store.emit(
            Event(
                type=EventType.TASK_STARTED,
                agent_id=agent.agent_id,
                task_id=agent.task_id,
                data={
                    "attempt": run.attempt,
                    "instance": self.instance,
                    "recovered": recovered,
                    "runtime": run.runtime,
                },
            )
        )
        run.agent = agent = await take_over(
            self.lifecycle,
            agent.agent_id,
            self.instance,
            {"attempts": run.attempt, "runtime": run.runtime},
        )
        run.fence = agent.fence
        run.lifecycle = RunLifecycle(self.lifecycle, run.fence)
        if run.attempt > run.max_attempts:
            await run.lifecycle.transition(
                agent.agent_id,
                AgentStatus.FAILED,
                error=f"lost its process {run.attempt - 1} time(s): no attempts left",
            )
            raise GiveUp("no attempts left")
        async with contextlib.AsyncExitStack() as guard:
            watcher = asyncio.create_task(self._watch_fence(run))
            guard.push_async_callback(_cancel, watcher)
            return await self._stages(run, recovered)

    async def _watch_fence(self, run: RunContext) -> None:
        def ended(reason: str) -> None:  # final elsewhere (a missed kill event): stop at once
            self.request_kill(run.agent_id, grace_s=0)

        def lost(reason: str) -> None:
            run.fenced = reason
            log.warning("fenced: %s; killing the attempt", reason, extra={"agent_id": run.agent_id})
            self.request_kill(run.agent_id, grace_s=0)

        await watch_fence(
            self.store,
            run.agent_id,
            run.fence,
            fence_s=self.settings.fence_s,
            lease_s=self.settings.queue_lock_duration_ms / 1000,
            on_lost=lost,
            on_final=ended,
        )

    async def _stages(self, run: RunContext, recovered: bool) -> dict[str, Any]:
        agent = run.agent
        async with contextlib.AsyncExitStack() as stack:
            try:
                run.workspace = await self.workspaces.prepare(agent, run.request, stack)
                process = await self._launch(run, stack)
            except (AgentFailure, SandboxError, OrchestratorError) as exc:
                stage = exc.stage if isinstance(exc, AgentFailure) else "sandbox"
                message = exc.message if isinstance(exc, OrchestratorError) else str(exc)
                return await self._attempt_failed(run, stage, message)
            if run.kill_requested.is_set():
                return {"status": "killed"}
            workspace = run.workspace
            try:
                if recovered:
                    await run.lifecycle.update(
                        agent.agent_id, lambda a: _started(process, workspace)
                    )
                else:
                    await run.lifecycle.transition(
                        agent.agent_id,
                        AgentStatus.RUNNING,
                        data={"pid": process.pid, "worktree": str(workspace.path)},
                        **_started(process, workspace),
                    )
            except (IllegalTransition, NotFound):
                return {"status": "killed"}  # killed while starting; the stack cleans up
            exit_code = await self._follow(run, process, workspace)
            if run.fenced:
                raise Fenced(run.fenced)
            if run.kill_requested.is_set():
                return {"status": "killed"}
            outcome = await self._until_killed(run, self._finish(run, process, exit_code))
            if run.fenced:
                raise Fenced(run.fenced)
            return outcome

    @staticmethod
    async def _until_killed(
        run: RunContext, stage: Coroutine[Any, Any, dict[str, Any]]
    ) -> dict[str, Any]:
        """Run a stage (gates, push...), abandoning it as soon as the agent is killed."""
        task = asyncio.ensure_future(stage)
        killer = asyncio.ensure_future(run.kill_requested.wait())
        try:
            await asyncio.wait({task, killer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killer.cancel()
        if task.done():
            return task.result()
        task.cancel()  # cancelling kills the stage's own sandboxes (gate commands)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return {"status": "killed"}

    async def _launch(self, run: RunContext, stack: contextlib.AsyncExitStack) -> SandboxProcess:
        assert run.workspace is not None
        workspace = run.workspace
        await asyncio.to_thread(_fresh_log_dir, run.agent_dir)
        policy = SandboxPolicy.from_settings(
            self.settings,
            readonly=workspace.readonly_paths,
            hidden=[self.paths.root, self.paths.worktrees, Path.home(), CONFIG_DIR],
            toolchains=self.toolchains,
        )
        runtime = self.runtimes.get(run.runtime)
        await self._admitted(run)
        run.launch = await runtime.prepare(
            run.agent,
            run.request,
            worktree=workspace.path,
            agent_dir=run.agent_dir,
            policy=policy,
            stack=stack,
        )
        stack.push_async_callback(run.launch.collect)  # once; also when the agent is killed
        run.egress = await open_egress(self.proxy, run.agent, stack)
        if run.egress is not None:
            run.launch.spec = run.egress.apply(run.launch.spec)
        process = await self.sandbox.start(run.launch.spec)
        stack.callback(run.stopped.set)  # callbacks run in reverse: once the sandbox is released
        stack.push_async_callback(process.cleanup)
        stack.push_async_callback(self._stop, run, process)
        run.process = process
        return process

    async def _admitted(self, run: RunContext) -> None:
        """While the model's rate limit holds, a new agent waits to start (SPEC §15), unless a
        kill comes first; a hold past the agent's wall-time budget fails the attempt."""
        if self.admission is None:
            return
        deadline = time.monotonic() + self.settings.agent_max_wall_s
        waiting = asyncio.ensure_future(self.admission(deadline))
        killer = asyncio.ensure_future(run.kill_requested.wait())
        try:
            await asyncio.wait({waiting, killer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            killer.cancel()
            if not waiting.done():
                waiting.cancel()
            await asyncio.gather(waiting, killer, return_exceptions=True)
        if waiting.done() and not waiting.cancelled() and waiting.result() is False:
            raise AgentFailure(
                "model", "rate-limited past the agent's wall-time budget", retryable=True
            )

    async def _follow(self, run: RunContext, process: SandboxProcess, workspace: Workspace) -> int:
        assert run.launch is not None
        waiter = asyncio.create_task(process.wait())
        killer = asyncio.create_task(run.kill_requested.wait())
        disk = DiskBudget(
            self.settings.sandbox_disk_mb,
            workspace.path,
            workspace.baseline,
            private_dirs=run.launch.spec.rw_binds,
        )
        monitor = Monitor(
            self.settings, run.lifecycle, run.agent_dir, disk=disk, held=self.model_held
        )
        ended = asyncio.Event()
        follower = asyncio.create_task(
            run.launch.follow(
                lambda tool, summary: self._activity(run, tool, summary),
                lambda session_id: self._session(run, session_id),
                ended,
            )
        )
        watchers = [asyncio.create_task(monitor.watch(run.agent_id, process, run)), follower]
        for watcher in watchers:
            watcher.add_done_callback(_log_crash)
        try:
            await asyncio.wait({waiter, killer}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                await process.kill(self._grace(run))
            code = await waiter
            ended.set()  # the follower reports the rest of the session's output, then returns
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(follower), FOLLOW_DRAIN_S)
            return code
        finally:
            for task in (killer, *watchers):
                task.cancel()
            await asyncio.gather(killer, *watchers, return_exceptions=True)
            if not waiter.done():
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)

    async def _activity(self, run: RunContext, tool: str, summary: str) -> None:
        """One tool call of the session: an ``agent.activity`` event (masked)."""
        await self.store.emit(
            Event(
                type=EventType.AGENT_ACTIVITY,
                agent_id=run.agent_id,
                task_id=run.task_id,
                data=mask_data({"tool": tool, "summary": summary}),
            )
        )

    async def _session(self, run: RunContext, session_id: str) -> None:
        """The runtime's session id: kept in the status so that a retry resumes it."""
        await run.lifecycle.update(run.agent_id, lambda a: {"session_id": session_id})

    async def _finish(
        self, run: RunContext, process: SandboxProcess, exit_code: int
    ) -> dict[str, Any]:
        assert run.launch is not None and run.workspace is not None
        agent = run.agent
        stats = await process.stats()
        launch, stdout = run.launch, run.agent_dir / "stdout.log"
        outcome = await asyncio.to_thread(lambda: launch.outcome(last_line(stdout)))
        result = AgentResult(exit_code=exit_code, branch=run.workspace.branch, usage=outcome.usage)
        error: str | None = None
        if run.failure:
            error = run.failure
        elif stats.oom_killed:
            error = f"sandbox: memory limit ({self.settings.sandbox_default_memory_mb} MB) exceeded"
        elif exit_code != 0 and outcome.error:
            error = outcome.error if ":" in outcome.error else f"agent: {outcome.error}"
        elif exit_code != 0:
            tail = " | ".join(await asyncio.to_thread(tail_lines, run.agent_dir / "stderr.log", 3))
            error = f"agent: exited with code {exit_code}" + (f": {tail[:500]}" if tail else "")
        else:
            try:
                result = await self.finisher.finish(run, outcome, result)
            except AgentFailure as exc:
                error = exc.message
                result = exc.details if isinstance(exc.details, AgentResult) else result
        status = AgentStatus.FAILED if error else AgentStatus.COMPLETED
        error = mask_text(error) if error else None  # agent output and gate tails reach it
        headline = _headline(outcome.summary)
        await run.launch.collect()  # the transcript is there when the state says final
        try:
            await run.lifecycle.transition(
                agent.agent_id,
                status,
                error=error,
                summary=headline,
                result=result,
                data={"exitCode": exit_code, "summary": headline},
            )
        except IllegalTransition:
            return {"status": "killed"}
        if status is AgentStatus.FAILED:
            raise GiveUp(error)
        return {"status": status.value, "exitCode": exit_code}

    async def _attempt_failed(self, run: RunContext, stage: str, message: str) -> dict[str, Any]:
        agent, attempt, max_attempts = run.agent, run.attempt, run.max_attempts
        error = f"{stage}: {message}" if not message.startswith(f"{stage}:") else message
        error = mask_text(error)
        log.warning(
            "attempt %d/%d failed: %s",
            attempt,
            max_attempts,
            error,
            extra={"agent_id": agent.agent_id, "task_id": agent.task_id},
        )
        if attempt < max_attempts:
            delay_ms = self.settings.queue_backoff_ms * 2 ** (attempt - 1)
            await self.store.emit(
                Event(
                    type=EventType.TASK_RETRYING,
                    agent_id=agent.agent_id,
                    task_id=agent.task_id,
                    data={"attempt": attempt, "error": error, "nextDelayMs": delay_ms},
                )
            )
            await run.lifecycle.update(agent.agent_id, lambda a: {"error": error})
            raise RetryLater(error)
        with contextlib.suppress(IllegalTransition, NotFound):
            await run.lifecycle.transition(agent.agent_id, AgentStatus.FAILED, error=error)
        raise GiveUp(error)

    async def _fail(self, agent_id: str, error: str) -> None:
        with contextlib.suppress(IllegalTransition, NotFound):
            await self.lifecycle.transition(agent_id, AgentStatus.FAILED, error=error)


def _started(process: SandboxProcess, workspace: Workspace) -> dict[str, Any]:
    return {
        "pid": process.pid,
        "sandbox": process.handle,
        "worktree": str(workspace.path),
        "branch": workspace.branch,
        "base_sha": workspace.worktree.base_sha,  # the diff's base (GET /agents/{id}/diff)
    }


def _headline(text: str | None) -> str | None:
    """The summary line: the first non-empty line of the agent's final text, secrets masked."""
    for line in mask_text(text or "").splitlines():
        if line.strip():
            return line.strip()[:500]
    return None


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("agent watcher failed", exc_info=task.exception())


def _fresh_log_dir(agent_dir: Path) -> None:
    agent_dir.mkdir(parents=True, exist_ok=True)
    for name in ("stdout.log", "stderr.log"):
        (agent_dir / name).unlink(missing_ok=True)  # a retry starts with fresh logs
