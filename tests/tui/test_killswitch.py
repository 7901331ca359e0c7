"""The keyboard killswitch: `k` kills one agent, `K`/ctrl+k kill all, each after a confirmation."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from core.engine import Engine
from core.models import AgentStatus
from mosaic_tui.app import MosaicApp
from mosaic_tui.screens import ConfirmKill, ConfirmKillAll
from tests.tui.conftest import no_leftover, request, until, wait_status
from tests.tui.helpers import events_text, static_text, status_of


async def test_kill_asks_first_and_cancel_keeps_the_agent(engine: Engine, origin: Path) -> None:
    spawned = await engine.spawn(request("T-keep", origin))
    running = await wait_status(engine, spawned.agent_id, AgentStatus.RUNNING)
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: status_of(app, "T-keep") == "▶ running", what="running row")

        await pilot.press("k")
        assert isinstance(app.screen, ConfirmKill)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmKill)
        await pilot.pause(0.3)
        assert (await engine.status(spawned.agent_id)).status is AgentStatus.RUNNING
        assert spawned.agent_id in engine.spawner.live

        with no_leftover(running.pid):
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmKill)
            await pilot.press("y")
            await until(lambda: status_of(app, "T-keep") == "■ killed", what="killed row")
            state = await wait_status(engine, spawned.agent_id, AgentStatus.KILLED)
            await until(lambda: spawned.agent_id not in engine.spawner.live, what="reaped")
        assert state.error == "killed by dashboard"
        assert "killing agent" in events_text(app)


async def test_kill_all_needs_the_word_kill(engine: Engine, origin: Path) -> None:
    first = await engine.spawn(request("T-one", origin))
    second = await engine.spawn(request("T-two", origin))
    for agent in (first, second):
        await wait_status(engine, agent.agent_id, AgentStatus.RUNNING)
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: status_of(app, "T-two") == "▶ running", what="rows")

        await pilot.press("K")
        dialog = app.screen
        assert isinstance(dialog, ConfirmKillAll)
        await pilot.press("y", "enter")  # a stray key does not confirm
        assert app.screen is dialog
        await pilot.press(*"kill", "enter")  # nor the word in lower case
        assert app.screen is dialog
        assert "Not confirmed" in static_text(dialog.query_one("#problem", Static))
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmKillAll)
        await pilot.pause(0.3)
        for agent in (first, second):
            assert (await engine.status(agent.agent_id)).status is AgentStatus.RUNNING

        await pilot.press("ctrl+k")
        assert isinstance(app.screen, ConfirmKillAll)
        await pilot.press(*"KILL", "enter")
        await until(lambda: app.last_kill_all is not None, what="kill-all result")
        assert app.last_kill_all is not None
        assert app.last_kill_all.message == "Kill all completed: 2 killed, 0 failed"
        await until(lambda: "Kill all completed: 2 killed" in events_text(app), what="message")
        for agent in (first, second):
            assert (await engine.status(agent.agent_id)).status is AgentStatus.KILLED
        await until(lambda: status_of(app, "T-one") == "■ killed", what="killed rows")
        await until(lambda: not engine.spawner.live, what="all reaped")
