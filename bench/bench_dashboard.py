"""Dashboard responsiveness under load: 200 agents in the table, 100 events/s.

Measures, in one run on one real engine (embedded Redis, `none` sandbox):
  * the engine's event-loop lag (sleep overshoot) without the dashboard, then with it attached;
  * the time from a key press to the screen update (median, p99): `s` cycles the sort column,
    and we time until the table shows the new order (headless Textual app, pilot key presses).
Prints figures; not a test.  Run:  /work/venv/bin/python bench/bench_dashboard.py
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from core.engine import Engine
from core.models import AgentState, Event, EventType, SpawnRequest, TaskState, new_agent_id
from core.settings import load_settings
from core.valkey import EmbeddedValkey
from mosaic_tui.app import MosaicApp
from mosaic_tui.widgets import AgentsTable

AGENTS = 200
EVENTS_PER_S = 100
PHASE_S = 5.0
PRESSES = 60


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
        agent_id = ids[sent % len(ids)]
        await engine.store.emit(
            Event(
                type=EventType.GATE_PASSED,
                agent_id=agent_id,
                task_id=f"B-{sent % len(ids):03d}",
                data={"gate": "tests", "n": sent},
            )
        )
        sent += 1
        next_at += period
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return sent


async def seed(engine: Engine, origin: str) -> list[str]:
    ids = []
    for index in range(AGENTS):
        request = SpawnRequest.model_validate(
            {
                "taskId": f"B-{index:03d}",
                "agentType": "worker",
                "context": {"repository": origin},
            }
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


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<38} median {statistics.median(values):7.2f} ms   p99 {pct(values, 0.99):7.2f} ms"
        f"   max {max(values):7.2f} ms   (n={len(values)})"
    )


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mosaic-bench-") as tmp:
        root = Path(tmp)
        server = EmbeddedValkey(root / "valkey")
        await server.start()
        try:
            settings = load_settings(
                valkey_url=f"unix://{server.socket}",
                mosaic_state_dir=root / "state",
                sandbox_backend="none",
                mosaic_agent_command="sleep 30",
            )
            async with Engine.running(settings) as engine:
                await engine.pause()  # the seeded agents stay put; only events flow
                ids = await seed(engine, str(root))
                stop = asyncio.Event()
                flow = asyncio.create_task(event_flow(engine, ids, stop))
                base = await loop_lag(PHASE_S)

                app = TimedApp(engine, local=True)
                presses: list[float] = []
                async with app.run_test(size=(160, 48)) as pilot:
                    table = app.dashboard.query_one(AgentsTable)
                    while table.row_count < AGENTS:
                        await pilot.pause(0.1)
                    lag_task = asyncio.create_task(loop_lag(PHASE_S))
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
                        await asyncio.sleep(0.05)
                    with_dash = await lag_task
                    received = app.feed.received
                stop.set()
                sent = await flow
        finally:
            await server.stop()
    print(
        f"agents in table: {AGENTS}; events sent: {sent} at {EVENTS_PER_S}/s; "
        f"dashboard received {received}"
    )
    print(summary("key press -> screen (sort)", presses))
    print(summary("engine loop lag, no dashboard", base))
    print(summary("engine loop lag, dashboard attached", with_dash))
    print(
        f"lag ratio (median with/without): "
        f"{statistics.median(with_dash) / max(statistics.median(base), 1e-3):.1f}x"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
