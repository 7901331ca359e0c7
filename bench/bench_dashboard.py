"""Dashboard responsiveness under load: 1,000 agents in the table, 100 events/s, two designs.

Measures, in one run, on real engines (embedded Redis, `none` sandbox), for each design:
  * shared loop: the engine and the dashboard on one asyncio loop (as before issue 15);
  * engine thread: the engine on its own loop in its own thread, the dashboard on the main
    thread's loop, joined by ``mosaic_tui.bridge.ThreadedEngine`` (what the product runs);
the engine's event-loop lag (sleep overshoot, 10 ms sleeps) without the dashboard and with it
attached, and the time from a key press to the screen update: ``s`` cycles the sort column and
we time until the screen is written after the key was handled (headless Textual app).
Half the events are ``agent.activity`` (they rewrite the last-activity column; while the table
is sorted by it, every one moves a row). Prints figures against the goals; not a test.
Run:  python bench/bench_dashboard.py [shared] [thread]   (both by default)
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from core.engine import Engine
from core.engine_api import EngineAPI
from core.models import AgentState, Event, EventType, SpawnRequest, TaskState, new_agent_id
from core.settings import Settings, load_settings
from core.valkey import EmbeddedValkey
from mosaic_tui.app import MosaicApp
from mosaic_tui.bridge import EngineThread, ThreadedEngine, faster_thread_switches

AGENTS = 1000
EVENTS_PER_S = 100
PHASE_S = 6.0
PRESSES = 200
KEY_GOAL_MS = 50.0
LAG_GOAL_MS = 10.0
T = TypeVar("T")


class TimedApp(MosaicApp):
    """Records when the screen was last written (the driver's display call)."""

    displayed = 0.0

    def _display(self, screen: Any, renderable: Any) -> None:
        if renderable is not None:
            self.displayed = time.perf_counter()
        super()._display(screen, renderable)


async def loop_lag(seconds: float, interval: float = 0.01) -> list[float]:
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        start = loop.time()
        await asyncio.sleep(interval)
        lags.append((loop.time() - start - interval) * 1000)
    return lags


async def event_flow(engine: Engine, ids: list[str], stop: asyncio.Event) -> int:
    sent = 0
    period = 1 / EVENTS_PER_S
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not stop.is_set():
        index = sent % len(ids)
        if sent % 2:
            kind, data = EventType.AGENT_ACTIVITY, {"tool": "Edit", "summary": f"src/m{sent}.py"}
        else:
            kind, data = EventType.GATE_PASSED, {"gate": "tests", "n": sent}
        await engine.store.emit(
            Event(type=kind, agent_id=ids[index], task_id=f"B-{index:04d}", data=data)
        )
        sent += 1
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return sent


async def seed(engine: Engine, origin: str) -> list[str]:
    ids = []
    for index in range(AGENTS):
        request = SpawnRequest.model_validate(
            {"taskId": f"B-{index:04d}", "agentType": "worker", "context": {"repository": origin}}
        )
        agent = AgentState(
            agent_id=new_agent_id(),
            task_id=request.task_id,
            agent_type=request.agent_type,
            gate_profile=request.effective_profile,
            resources={"cpu_seconds": index / 10, "memory_bytes": 1e6 * index, "runtime_s": 5},
            last_output=f"step {index}",
        )
        task = TaskState(task_id=agent.task_id, agent_id=agent.agent_id, request=request)
        await engine.lifecycle.create(agent, task)
        ids.append(agent.agent_id)
    return ids


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(name: str, values: list[float], goal: float | None = None) -> str:
    p99 = pct(values, 0.99)
    verdict = ""
    if goal is not None:
        verdict = f"   goal p99 <= {goal:.0f} ms: {'met' if p99 <= goal else 'NOT met'}"
    return (
        f"  {name:<36} median {statistics.median(values):7.2f} ms   p99 {p99:7.2f} ms"
        f"   max {max(values):7.2f} ms   (n={len(values)}){verdict}"
    )


@contextlib.asynccontextmanager
async def settings_for_run() -> AsyncIterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-") as tmp:
        root = Path(tmp)
        server = EmbeddedValkey(root / "valkey")
        await server.start()
        try:
            yield load_settings(
                valkey_url=f"unix://{server.socket}",
                mosaic_state_dir=root / "state",
                sandbox_backend="none",
                mosaic_agent_command="sleep 30",
                orchestrator_port=0,
            )
        finally:
            await server.stop()


async def press_keys(app: TimedApp) -> tuple[list[float], list[float]]:
    presses: list[float] = []
    handling: list[float] = []
    for _ in range(PRESSES):
        before = app.book.sort_column
        start = time.perf_counter()
        app.simulate_key("s")
        while app.book.sort_column == before:  # the key is handled...
            await asyncio.sleep(0)
        handled = time.perf_counter()
        while app.displayed < handled:  # ...and the screen redrawn
            await asyncio.sleep(0)
        presses.append((app.displayed - start) * 1000)
        handling.append((handled - start) * 1000)
        await asyncio.sleep(0.05)
    return presses, handling


async def with_dashboard(
    client: EngineAPI, lag: Callable[[], Awaitable[list[float]]]
) -> tuple[list[float], list[float], list[float], int]:
    app = TimedApp(client, local=True, settle_heap=True)  # as the product's entry points
    async with app.run_test(size=(160, 48), notifications=True) as pilot:  # as in the product
        while app.dashboard.table.row_count < AGENTS:
            await pilot.pause(0.1)
        await pilot.pause(1.0)
        lag_task = asyncio.ensure_future(lag())
        presses, handling = await press_keys(app)
        lags = await lag_task
        return presses, handling, lags, app.feed.received


async def shared_loop() -> dict[str, Any]:
    async with settings_for_run() as settings, Engine.running(settings) as engine:
        await engine.pause()  # the seeded agents stay put; only events flow
        ids = await seed(engine, str(settings.mosaic_state_dir))
        stop = asyncio.Event()
        flow = asyncio.create_task(event_flow(engine, ids, stop))
        base = await loop_lag(PHASE_S)
        presses, handling, lags, received = await with_dashboard(engine, lambda: loop_lag(PHASE_S))
        stop.set()
        sent = await flow
    return {
        "base": base,
        "presses": presses,
        "handling": handling,
        "lags": lags,
        "sent": sent,
        "received": received,
    }


async def engine_thread() -> dict[str, Any]:
    restore = faster_thread_switches()
    async with settings_for_run() as settings:
        runner: EngineThread[Engine] = EngineThread(
            lambda: Engine.running(settings), "bench-engine"
        )
        engine = await asyncio.to_thread(runner.start)
        loop = runner.loop
        assert loop is not None

        async def there(coro: Awaitable[T]) -> T:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))  # type: ignore[arg-type]

        try:
            await there(engine.pause())
            ids = await there(seed(engine, str(settings.mosaic_state_dir)))
            stop = asyncio.Event()
            flow = asyncio.run_coroutine_threadsafe(event_flow(engine, ids, stop), loop)
            base = await there(loop_lag(PHASE_S))
            presses, handling, lags, received = await with_dashboard(
                ThreadedEngine(engine, loop), lambda: there(loop_lag(PHASE_S))
            )
            loop.call_soon_threadsafe(stop.set)
            sent = await asyncio.wrap_future(flow)
        finally:
            await asyncio.to_thread(runner.stop)
            restore()
    return {
        "base": base,
        "presses": presses,
        "handling": handling,
        "lags": lags,
        "sent": sent,
        "received": received,
    }


def report(name: str, run: dict[str, Any]) -> None:
    print(
        f"{name}: {AGENTS} agents, {run['sent']} events sent at {EVENTS_PER_S}/s, "
        f"dashboard received {run['received']}"
    )
    print(summary("key press -> screen (sort)", run["presses"], KEY_GOAL_MS))
    print(summary("  of which: until the key is handled", run["handling"]))
    print(summary("engine loop lag, no dashboard", run["base"]))
    print(summary("engine loop lag, dashboard attached", run["lags"], LAG_GOAL_MS))


async def main() -> None:
    which = sys.argv[1:] or ["shared", "thread"]
    if "shared" in which:
        report("shared loop (engine and dashboard on one loop)", await shared_loop())
    if "thread" in which:
        report("engine thread (engine on its own loop and thread)", await engine_thread())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
