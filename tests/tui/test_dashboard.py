"""The agents view, detail view, queue panel, spawn form, help and quit, on a real engine."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, Select, Static, TextArea

from core.engine import Engine
from core.models import AgentStatus
from mosaic_tui.app import MosaicApp
from mosaic_tui.screens import ConfirmQuit, DetailScreen, HelpScreen, SpawnScreen
from mosaic_tui.screens.dashboard import DashboardScreen
from mosaic_tui.widgets import AgentsTable
from tests.tui.conftest import request, until, wait_status
from tests.tui.helpers import (
    events_text,
    log_text,
    queue_text,
    row_for,
    rows,
    static_text,
    status_of,
)


async def test_filter_narrows_the_table_and_escape_clears_it(engine: Engine, origin: Path) -> None:
    await engine.pause()
    for task in ("T-alpha", "T-beta", "T-gamma"):
        await engine.spawn(request(task, origin))
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: len(rows(app)) == 3, what="three rows")
        await pilot.press("slash", *"beta")
        await until(lambda: [r[1] for r in rows(app)] == ["T-beta"], what="filtered")
        await pilot.press("enter")  # keeps the filter, back to the table
        assert app.dashboard.query_one(AgentsTable).has_focus
        assert [r[1] for r in rows(app)] == ["T-beta"]
        await pilot.press("slash", "escape")
        await until(lambda: len(rows(app)) == 3, what="filter cleared")
        await pilot.press("slash", *"no-such-agent")
        await until(lambda: rows(app) == [], what="nothing matches")


async def test_sort_key_cycles_columns_and_reverses(engine: Engine, origin: Path) -> None:
    await engine.pause()
    for task in ("T-b", "T-c", "T-a"):
        await engine.spawn(request(task, origin))
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: len(rows(app)) == 3, what="rows")
        assert [r[1] for r in rows(app)] == ["T-a", "T-c", "T-b"]  # newest first
        await pilot.press("s", "s")  # age -> cpu -> mem ... cycle from age: cpu, mem
        assert app.book.sort_column == "mem"
        while app.book.sort_column != "task":
            await pilot.press("s")
        await until(lambda: [r[1] for r in rows(app)] == ["T-a", "T-b", "T-c"], what="by task")
        table = app.dashboard.query_one(AgentsTable)
        assert table.header_labels()[1] == "Task▲"
        await pilot.press("S")
        await until(lambda: [r[1] for r in rows(app)] == ["T-c", "T-b", "T-a"], what="reversed")


async def test_pause_and_resume_show_in_the_panel_and_the_engine(engine: Engine) -> None:
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: "▶ RUNNING" in queue_text(app), what="queue shown")
        assert "concurrency 2" in queue_text(app)
        await pilot.press("p")
        await until(lambda: "⏸ PAUSED" in queue_text(app), what="paused shown")
        assert (await engine.queue_stats()).paused
        await until(lambda: "queue.paused" in events_text(app), what="event")
        await pilot.press("p")
        await until(lambda: "▶ RUNNING" in queue_text(app), what="resumed shown")
        assert not (await engine.queue_stats()).paused


async def test_spawn_form_validates_then_spawns(engine: Engine, origin: Path) -> None:
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, SpawnScreen)
        error = form.query_one("#form-error", Static)

        await pilot.press(*"bad id!", "ctrl+s")
        assert "taskId" in static_text(error)
        assert "letters, digits" in static_text(error)
        assert app.screen is form

        form.query_one("#task_id", Input).value = "T-new"
        form.query_one("#priority", Input).value = "11"
        await pilot.press("ctrl+s")
        assert "priority" in static_text(error)

        form.query_one("#priority", Input).value = "3"
        form.query_one("#repository", Input).value = str(origin.parent / "missing.git")
        await pilot.press("ctrl+s")
        await until(lambda: "refused" in static_text(error), what="engine refusal")
        assert app.screen is form

        form.query_one("#repository", Input).value = str(origin)
        form.query_one("#work_items", Input).value = "US-1, US-2"
        form.query_one("#gate_profile", Select).value = "minimal"
        form.query_one("#instructions", TextArea).text = "be brief"
        await pilot.press("ctrl+s")
        await until(lambda: not isinstance(app.screen, SpawnScreen), what="form closed")
        await until(lambda: row_for(app, "T-new") is not None, what="new row")
        agent = next(a for a in await engine.list_agents() if a.task_id == "T-new")
        assert agent.gate_profile.value == "minimal"
        task = await engine.store.get_task("T-new")
        assert task is not None
        assert task.request.priority == 3
        assert task.request.context.work_items == ["US-1", "US-2"]
        assert task.request.context.instructions == "be brief"
        table = app.dashboard.query_one(AgentsTable)
        await until(lambda: table.selected_agent_id == agent.agent_id, what="selected")


async def test_spawn_form_keeps_the_draft_when_closed(engine: Engine) -> None:
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("n", *"T-draft", "escape")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("n")
        assert app.screen.query_one("#task_id", Input).value == "T-draft"


async def test_detail_view_follows_the_agent(engine: Engine, origin: Path) -> None:
    spawned = await engine.spawn(request("T-detail", origin))
    await wait_status(engine, spawned.agent_id, AgentStatus.RUNNING)
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: status_of(app, "T-detail") == "▶ running", what="row")
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, DetailScreen)
        assert detail.agent_id == spawned.agent_id
        fields = detail.query_one("#fields", Static)
        await until(lambda: "worktree" in static_text(fields).lower(), what="fields")
        await until(lambda: "working-line" in log_text(detail.query_one("#tail")), what="tail")
        assert "agent.running" in log_text(detail.query_one("#timeline"))
        assert "T-detail" in static_text(fields)

        await pilot.press("k", "y")  # kill from the detail view
        await until(lambda: "killed" in static_text(fields), what="killed in detail")
        await until(
            lambda: "agent.killed" in log_text(detail.query_one("#timeline")), what="timeline"
        )
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_help_lists_every_key(engine: Engine) -> None:
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(100, 50)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = static_text(app.screen.query_one("#help-keys", Static))
        screens = (DashboardScreen, DetailScreen, SpawnScreen)
        for screen in screens:
            for binding in screen.BINDINGS:
                assert app.get_key_display(binding) in text, binding
                assert binding.description in text, binding
        assert "KILL" in text
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_quit_asks_before_stopping_live_agents(engine: Engine, origin: Path) -> None:
    spawned = await engine.spawn(request("T-live", origin))
    await wait_status(engine, spawned.agent_id, AgentStatus.RUNNING)
    app = MosaicApp(engine, local=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: status_of(app, "T-live") == "▶ running", what="row")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("n")
        assert isinstance(app.screen, DashboardScreen)
        assert app.is_running
        await pilot.press("q", "y")
        await until(lambda: not app.is_running, what="app exit")
    assert (await engine.status(spawned.agent_id)).status is AgentStatus.RUNNING  # engine owner
