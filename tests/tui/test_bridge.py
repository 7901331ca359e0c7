"""The engine on its own loop and thread (what the local dashboard runs): the dashboard drives
it through ``ThreadedEngine`` exactly as in-process, and stopping the thread stops the engine."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from core.engine import Engine
from core.errors import NotFound
from core.models import AgentStatus
from core.settings import Settings
from mosaic_tui.app import MosaicApp
from mosaic_tui.bridge import EngineThread, ThreadedEngine
from mosaic_tui.screens import ConfirmKill
from tests.tui.conftest import no_leftover, request, until, wait_status
from tests.tui.helpers import events_text, queue_text, status_of


async def test_dashboard_over_an_engine_thread(settings: Settings, origin: Path) -> None:
    thread: EngineThread[Engine] = EngineThread(lambda: Engine.running(settings), "test-engine")
    engine = await asyncio.to_thread(thread.start)
    assert thread.loop is not None and thread.loop is not asyncio.get_running_loop()
    try:
        client = ThreadedEngine(engine, thread.loop)
        spawned = await client.spawn(request("T-threaded", origin))
        running = await wait_status(client, spawned.agent_id, AgentStatus.RUNNING)
        with pytest.raises(NotFound):
            await client.status("no-such-agent")
        app = MosaicApp(client, local=True)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(lambda: status_of(app, "T-threaded") == "▶ running", what="row")
            await until(lambda: "agent.running" in events_text(app), what="events")
            await until(lambda: "live 1/2" in queue_text(app), what="stats")
            with no_leftover(running.pid):
                await pilot.press("k")
                assert isinstance(app.screen, ConfirmKill)
                await pilot.press("y")
                await until(lambda: status_of(app, "T-threaded") == "■ killed", what="killed")
                await wait_status(client, spawned.agent_id, AgentStatus.KILLED)
                await until(lambda: spawned.agent_id not in engine.spawner.live, what="reaped")
            assert app.alerted == []  # its own kill
        # an engine call from the dashboard's loop ran on the engine's thread
        names: list[str] = []

        async def where() -> None:
            names.append(threading.current_thread().name)

        await client._on_engine(where())
        assert names == ["test-engine"]
    finally:
        await asyncio.to_thread(thread.stop)
    assert thread.loop.is_closed()


async def test_a_failing_start_is_raised_to_the_caller(settings: Settings) -> None:
    broken = settings.model_copy(update={"valkey_url": "redis://127.0.0.1:1/0"})
    thread: EngineThread[Engine] = EngineThread(lambda: Engine.running(broken), "test-broken")
    with pytest.raises(Exception, match=r"(?i)valkey|connect|reach"):
        await asyncio.to_thread(thread.start, 60)
