"""The engine: the one facade the API and the dashboard drive (``EngineAPI``).

``Engine.running(settings)`` builds every part in one place (the only place that chooses
implementations), starts them in order and stops them in reverse: on exit, live agents of this
instance are killed and reaped, the worker and queue closed, the instance's (by then empty) sandbox
scope removed, the embedded Valkey stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from core.agent_diff import agent_diff
from core.agents import ModelGateway, PriceTable, model_config_problem
from core.agents.claude_code import find_claude
from core.agents.ratelimit import rate_limited_event
from core.engine_api import KillAllResult, QueueStats, SpawnResponse
from core.errors import Conflict, NotFound, NotReady, ValidationFailed
from core.events import EventBus
from core.gates import create_gate_runner, validate_gate_names
from core.gc import collect_garbage
from core.git import validate_branch, validate_repository
from core.instance import instance_name, sandbox_scope
from core.killswitch import Killswitch
from core.lifecycle import Lifecycle
from core.models import (
    LIVE_STATUSES,
    AgentState,
    AgentStatus,
    Event,
    EventType,
    GateProfile,
    SpawnRequest,
    TaskState,
    Usage,
    new_agent_id,
)
from core.net import Allowlist, EgressProxy
from core.paths import StatePaths
from core.queue import TaskQueue
from core.reconcile import reconcile, sweep_lost
from core.run import REVIEW_SUFFIX, AiReviewer, Finisher, Spawner, WorkspaceManager
from core.run.iodir import io_root
from core.run.runtimes import BuiltinRuntime, CommandRuntime, Runtime, Runtimes
from core.run.runtimes.claude_code import ClaudeCodeRuntime
from core.run.skills import resolve_skills, skill_names
from core.settings import Settings
from core.store import StateStore
from core.valkey import ValkeyEndpoint, ValkeyWatch, open_valkey
from sandbox import Sandbox, SandboxError
from sandbox.factory import create_sandbox, release_scope
from sandbox.reaper import OrphanReaper, enable_subreaper

log = logging.getLogger(__name__)

READY_PING_S = 1.0


class Engine:
    def __init__(
        self,
        *,
        settings: Settings,
        endpoint: ValkeyEndpoint,
        store: StateStore,
        lifecycle: Lifecycle,
        bus: EventBus,
        queue: TaskQueue,
        sandbox: Sandbox,
        spawner: Spawner,
        killswitch: Killswitch,
        runtimes: Runtimes,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.store = store
        self.lifecycle = lifecycle
        self.bus = bus
        self.queue = queue
        self.sandbox = sandbox
        self.spawner = spawner
        self.killswitch = killswitch
        self.runtimes = runtimes
        self.instance = spawner.instance
        self.started = time.monotonic()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, settings: Settings, *, subreaper: bool = False) -> AsyncIterator[Engine]:
        """Run the engine for the block. ``subreaper``: adopt and reap orphaned descendants
        (double-forked agent processes); set by the CLI, which owns the whole process."""
        paths = StatePaths(settings.mosaic_state_dir)
        paths.create()
        instance = instance_name(settings)
        async with contextlib.AsyncExitStack() as stack:
            endpoint = await stack.enter_async_context(open_valkey(settings))
            client = endpoint.client()
            stack.push_async_callback(client.aclose)
            reader = endpoint.client(socket_timeout=None)
            stack.push_async_callback(reader.aclose)
            try:
                await client.ping()  # type: ignore[misc]
            except Exception as exc:
                raise NotReady(f"Valkey at {endpoint.label} is not reachable: {exc}") from None
            watch = ValkeyWatch(endpoint)
            stack.push_async_callback(watch.aclose)
            watching = asyncio.create_task(watch.run(), name="valkey-watch")
            stack.push_async_callback(_cancel, watching)
            store = StateStore(
                client, stream_maxlen=settings.event_stream_maxlen, availability=watch
            )
            durable = store.durable_twin()  # the run pipeline's: waits out Valkey outages
            lifecycle = Lifecycle(durable)
            scope = sandbox_scope(settings, instance)
            sandbox = _make_sandbox(settings, scope)
            stack.push_async_callback(release_scope, settings.sandbox_backend, scope)
            claude, claude_problem = await _make_claude(settings, lifecycle, stack)
            runtimes = _make_runtimes(settings, claude, claude_problem)
            reviewer = AiReviewer(settings, sandbox, claude, paths) if claude else None
            finisher = Finisher(
                settings=settings,
                store=durable,
                gates=create_gate_runner(settings.coordinator_url),
                sandbox_for_gates=sandbox,
                paths=paths,
                ai_review=reviewer.for_workspace if reviewer else None,
                push_non_workers=settings.push_non_workers,
            )
            proxy = _make_proxy(settings, store, lifecycle)
            spawner = Spawner(
                settings=settings,
                store=durable,
                lifecycle=lifecycle,
                sandbox=sandbox,
                workspaces=WorkspaceManager(
                    paths,
                    author_name=settings.git_author_name,
                    author_email=settings.git_author_email,
                ),
                runtimes=runtimes,
                finisher=finisher,
                paths=paths,
                instance=instance,
                proxy=proxy,
                admission=claude.gateway.wait_clear if claude else None,
                model_held=_held(claude.gateway) if claude else None,
            )
            queue = TaskQueue(settings, endpoint.kwargs)
            stack.push_async_callback(queue.close)
            await reconcile(
                store=store,
                lifecycle=lifecycle,
                sandbox=sandbox,
                paths=paths,
                instance=instance,
                author=(settings.git_author_name, settings.git_author_email),
            )
            bus = EventBus(store, reader)
            await bus.start()
            stack.push_async_callback(bus.stop)
            killswitch = Killswitch(
                store=durable,
                lifecycle=lifecycle,
                queue=queue,
                spawner=spawner,
                grace_s=settings.kill_grace_s,
            )
            engine = cls(
                settings=settings,
                endpoint=endpoint,
                store=store,
                lifecycle=lifecycle,
                bus=bus,
                queue=queue,
                sandbox=sandbox,
                spawner=spawner,
                killswitch=killswitch,
                runtimes=runtimes,
            )
            await sweep_lost(store, lifecycle, queue.job_state)
            queue.start_worker(spawner.run, name=instance)
            listener = asyncio.create_task(engine._follow_kills(), name="kill-listener")
            stack.push_async_callback(_cancel, listener)
            collector = asyncio.create_task(engine._collect_garbage(), name="gc")
            stack.push_async_callback(_cancel, collector)
            if subreaper and enable_subreaper():
                reaper = asyncio.create_task(OrphanReaper().run(), name="orphan-reaper")
                stack.push_async_callback(_cancel, reaper)
            stack.push_async_callback(engine._shutdown)
            log.info("engine started (instance %s, Valkey %s)", instance, endpoint.label)
            yield engine

    async def _collect_garbage(self) -> None:
        """Every ``GC_INTERVAL_S``: expire kept work, remove orphan worktrees and stale clones."""
        settings = self.settings
        while True:
            await asyncio.sleep(settings.gc_interval_s)
            try:
                await sweep_lost(self.store, self.lifecycle, self.queue.job_state)
                agents = await self.store.list_agents(limit=100_000)
                live = {a.agent_id for a in agents if not a.status.final} | set(self.spawner.live)
                await collect_garbage(
                    self.spawner.paths,
                    keep_days=settings.mosaic_keep_days,
                    live=live,
                    author=(settings.git_author_name, settings.git_author_email),
                    io_root=await asyncio.to_thread(io_root),
                )
            except Exception:  # the next pass tries again
                log.exception("gc pass failed")

    async def _follow_kills(self) -> None:
        """Stop local agents killed through another instance (kill-all reaches every instance),
        with the grace the killing instance chose (``graceS``: kill-all kills at once)."""
        async for event in self.bus.subscribe():
            if event.type is EventType.AGENT_KILLED and event.agent_id in self.spawner.live:
                grace = event.data.get("graceS")
                if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
                    grace = None
                self.spawner.request_kill(event.agent_id, grace_s=grace)

    async def _shutdown(self) -> None:
        """Stop taking jobs, kill this instance's live agents (TERM, grace, KILL: a shutdown is
        not an emergency) all at once, and close the worker, which waits until every run has
        cleaned up. An agent whose state cannot be written (Valkey gone) is stopped anyway."""
        self.store.stop_waiting(grace_s=5.0)  # Valkey gone: runs stop waiting for it
        closing = asyncio.create_task(self.queue.close_worker())
        await asyncio.sleep(0)
        live = list(self.spawner.live)
        if live:
            log.info("shutting down: killing %d local agent(s)", len(live))
        results = await asyncio.gather(
            *(self.killswitch.kill(agent_id, who="shutdown") for agent_id in live),
            return_exceptions=True,
        )
        for agent_id, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("shutdown kill: %s", result, extra={"agent_id": agent_id})
                self.spawner.request_kill(agent_id)
        await closing

    # -- EngineAPI -----------------------------------------------------------------------------
    async def spawn(self, request: SpawnRequest) -> SpawnResponse:
        ctx = request.context
        validate_repository(ctx.repository)
        validate_branch(ctx.branch)
        if ctx.gates is not None:
            validate_gate_names(ctx.gates)
        if request.effective_profile is GateProfile.CUSTOM and not ctx.gates:
            pass  # custom gates may come from the repository's .mosaic/gates.toml
        await asyncio.to_thread(resolve_skills, self.settings.mosaic_skills_dir, ctx.skills)
        runtime = self.runtimes.check(request.runtime)  # 503 naming what is missing
        sandbox = await self.sandbox.health()
        if not sandbox.ok:  # e.g. no cgroups: fail closed before anything is created
            raise NotReady(f"sandbox {sandbox.backend}: {sandbox.detail}")
        existing = await self.store.get_task(request.task_id)
        if existing is not None and existing.status in LIVE_STATUSES:
            return self._existing(existing, request)
        agent = AgentState(
            agent_id=new_agent_id(),
            task_id=request.task_id,
            agent_type=request.agent_type,
            gate_profile=request.effective_profile,
            runtime=runtime,
        )
        task = TaskState(task_id=request.task_id, agent_id=agent.agent_id, request=request)
        agent, other = await self.lifecycle.create(agent, task)
        if other is not None:
            return self._existing(other, request)
        try:
            await self.queue.add(agent.agent_id, agent.task_id, request.priority)
        except Exception as exc:
            await self.lifecycle.transition(
                agent.agent_id, AgentStatus.FAILED, error=f"queue: could not enqueue: {exc}"
            )
            raise NotReady(f"the queue is not usable: {exc}") from None
        await self.store.emit(
            Event(
                type=EventType.TASK_QUEUED,
                agent_id=agent.agent_id,
                task_id=agent.task_id,
                data={"priority": request.priority, "agentType": request.agent_type.value},
            )
        )
        return SpawnResponse(agent_id=agent.agent_id, status=AgentStatus.SPAWNING)

    @staticmethod
    def _existing(task: TaskState, request: SpawnRequest) -> SpawnResponse:
        if task.request.model_dump() != request.model_dump():
            raise Conflict(
                f"task {task.task_id} already has a live agent ({task.agent_id}) "
                "spawned with a different request",
                details={"agentId": task.agent_id},
            )
        return SpawnResponse(agent_id=task.agent_id, status=task.status, existing=True)

    async def status(self, agent_id: str) -> AgentState:
        return await self.store.get_agent(agent_id)

    async def diff(self, agent_id: str) -> str:
        agent = await self.store.get_agent(agent_id)
        task = await self.store.get_task(agent.task_id)
        return await agent_diff(agent, task, self.spawner.paths)

    async def list_agents(self, status: AgentStatus | None = None) -> list[AgentState]:
        agents = await self.store.list_agents()
        return [a for a in agents if status is None or a.status is status]

    async def kill(self, agent_id: str, *, who: str = "api") -> AgentState:
        return await self.killswitch.kill(agent_id, who=who)

    async def kill_all(self, *, who: str = "api") -> KillAllResult:
        return await self.killswitch.kill_all(who=who)

    async def pause(self) -> None:
        await self.queue.pause()
        await self.store.emit(Event(type=EventType.QUEUE_PAUSED, data={"instance": self.instance}))

    async def resume(self) -> None:
        await self.queue.resume()
        await self.store.emit(Event(type=EventType.QUEUE_RESUMED, data={"instance": self.instance}))

    async def queue_stats(self) -> QueueStats:
        stats = await self.queue.stats()
        stats.live_agents = len(self.spawner.live)
        if self.spawner.runtimes.problem("builtin") is None:  # its gateway holds the rate limit
            gateway = getattr(self.spawner.runtimes.get("builtin"), "gateway", None)
            if isinstance(gateway, ModelGateway):
                stats.rate_limited_until = gateway.rate_limited_until
        return stats

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            watch = self.store.availability
            if watch is not None and not watch.up:
                raise ConnectionError(watch.error or "Valkey does not answer")
            if watch is None:  # else the watch's last PING (with its short timeout) says
                async with asyncio.timeout(READY_PING_S):  # a paused Valkey: no hang
                    await self.store.redis.ping()  # type: ignore[misc]
            checks["valkey"] = {
                "ok": True,
                "endpoint": self.endpoint.label,
                "embedded": self.endpoint.embedded,
            }
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            checks["valkey"] = {"ok": False, "endpoint": self.endpoint.label, "error": error}
        worker = self.queue.worker
        checks["queue"] = {"ok": worker is not None and not getattr(worker, "closing", False)}
        health = await self.sandbox.health()
        checks["sandbox"] = {
            "ok": health.ok,
            "backend": health.backend,
            "degraded": health.degraded,
        }
        if health.detail:
            checks["sandbox"]["detail"] = health.detail
        problem = self.runtimes.problem()
        checks["model"] = {"ok": problem is None, "runtime": self.runtimes.default}
        if problem:
            checks["model"]["error"] = problem
        ok = all(c["ok"] for c in checks.values())
        return ok, checks

    def runtime_names(self) -> list[str]:
        """The runtimes a spawn may ask for here (the others answer 503 naming what is missing)."""
        return self.runtimes.available()

    def skill_names(self) -> list[str]:
        """The skills a spawn may name (``MOSAIC_SKILLS_DIR``)."""
        return skill_names(self.settings.mosaic_skills_dir)

    def events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        return self.bus.subscribe(last_event_id)

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started

    @property
    def store_available(self) -> bool:
        """Whether Valkey answers; while it does not, the API answers 503 at once."""
        watch = self.store.availability
        return watch is None or watch.up


def _make_sandbox(settings: Settings, scope: str) -> Sandbox:
    """The configured backend, working only in this instance's ``scope`` (core/instance.py)."""
    try:
        return create_sandbox(
            settings.sandbox_backend,
            cgroup_parent=scope,
            docker_socket=settings.docker_socket,
            docker_image=settings.docker_image,
            uid=settings.sandbox_uid,
            gid=settings.sandbox_gid,
            allow_no_cgroups=settings.sandbox_allow_no_cgroups,
            bwrap=settings.sandbox_bwrap,
        )
    except SandboxError as exc:
        raise NotReady(f"sandbox backend {settings.sandbox_backend!r}: {exc}") from None


async def _make_claude(
    settings: Settings, lifecycle: Lifecycle, stack: contextlib.AsyncExitStack
) -> tuple[BuiltinRuntime | None, str | None]:
    """The built-in Claude runtime behind the model gateway, or why it is not available."""
    problem = model_config_problem(settings.model_api_key, settings.anthropic_base_url)
    if problem:
        return None, problem

    async def record_usage(session_id: str, delta: Usage) -> None:
        agent_id = session_id.removesuffix(REVIEW_SUFFIX)  # ai_review sessions bill their agent

        def add(agent: AgentState) -> dict[str, Any]:
            u = agent.usage
            return {
                "usage": Usage(
                    input_tokens=u.input_tokens + delta.input_tokens,
                    output_tokens=u.output_tokens + delta.output_tokens,
                    cost_usd=round(u.cost_usd + delta.cost_usd, 6),
                    turns=u.turns + delta.turns,
                )
            }

        with contextlib.suppress(NotFound):
            await lifecycle.update(agent_id, add)

    async def rate_limited(until: datetime, wait_s: float, status: int) -> None:
        await lifecycle.store.emit(rate_limited_event(until, wait_s, status))

    gateway = ModelGateway(
        settings.anthropic_base_url,
        settings.model_api_key,
        PriceTable.load(),
        record_usage,
        max_inflight=settings.gateway_max_inflight,
        count_tokens_per_min=settings.gateway_count_tokens_per_min,
        on_rate_limited=rate_limited,
    )
    stack.push_async_callback(gateway.close)
    return BuiltinRuntime(settings, gateway, settings.mosaic_skills_dir), None


def _held(gateway: ModelGateway) -> Callable[[], bool]:
    return lambda: gateway.rate_limited_until is not None


def _make_proxy(settings: Settings, store: StateStore, lifecycle: Lifecycle) -> EgressProxy | None:
    """The egress proxy for ``SANDBOX_ALLOWED_HOSTS``; None (no network at all) without it."""
    allowlist = Allowlist.parse(settings.sandbox_allowed_hosts)
    if not allowlist:
        return None
    proxy: EgressProxy

    async def emit(agent_id: str, type_: EventType, data: dict[str, Any]) -> None:
        await store.emit(Event(type=type_, agent_id=agent_id, data=data))
        endpoint = proxy.endpoints.get(agent_id)
        if endpoint is not None:
            counts = endpoint.counts
            with contextlib.suppress(NotFound):
                await lifecycle.update(agent_id, lambda a: {"net": counts})

    proxy = EgressProxy(allowlist, emit, max_connections=settings.sandbox_proxy_max_connections)
    return proxy


def _make_runtimes(
    settings: Settings, builtin: BuiltinRuntime | None, builtin_problem: str | None
) -> Runtimes:
    """Every runtime this engine can run, and for the others what is missing."""
    available: dict[str, Runtime] = {}
    missing: dict[str, str] = {}
    if builtin is not None:
        available["builtin"] = builtin
    else:
        missing["builtin"] = builtin_problem or "the model is not configured"
    if settings.mosaic_agent_command:
        available["command"] = CommandRuntime(settings.mosaic_agent_command)
    else:
        missing["command"] = "MOSAIC_AGENT_COMMAND is not set"
    binary = find_claude(settings.mosaic_claude_code)
    if builtin is None:
        missing["claude-code"] = builtin_problem or "the model is not configured"
    elif binary is None:
        missing["claude-code"] = (
            f"the Claude Code CLI {settings.mosaic_claude_code or 'claude'!r} is not installed "
            "(npm install -g @anthropic-ai/claude-code, or set MOSAIC_CLAUDE_CODE)"
        )
    else:
        available["claude-code"] = ClaudeCodeRuntime(
            settings, builtin.gateway, binary, settings.mosaic_skills_dir
        )
    return Runtimes(settings.runtime, available, missing)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


__all__ = ["Engine", "ValidationFailed"]
