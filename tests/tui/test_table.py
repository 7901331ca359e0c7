"""The agents table (line API): sort, filter, 1,000 rows, and updates that redraw only their row.

A bare app hosts the table over an ``AgentBook`` filled with states (no engine needed: the table
only ever reads the book). What is asserted is what the screen shows.
"""

from __future__ import annotations

import html
import random
import re
from datetime import UTC, datetime, timedelta

from textual.app import App, ComposeResult

from core.models import AgentState, AgentStatus, Event, EventType
from mosaic_tui.book import AgentBook
from mosaic_tui.rows import SortedRows
from mosaic_tui.widgets import AgentsTable

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def state(n: int, **kw: object) -> AgentState:
    values: dict[str, object] = {
        "agent_id": f"{n:08d}-0000-4000-8000-000000000000",
        "task_id": f"T-{n:04d}",
        "agent_type": "worker",
        "gate_profile": "standard",
        "spawned_at": T0 + timedelta(seconds=n),
        "status": "running",
    }
    values.update(kw)
    return AgentState.model_validate(values)


class TableApp(App[None]):
    def __init__(self, book: AgentBook) -> None:
        super().__init__()
        self.book = book

    def compose(self) -> ComposeResult:
        yield AgentsTable()

    def on_mount(self) -> None:
        self.sync()

    def sync(self) -> AgentsTable:
        table = self.query_one(AgentsTable)
        table.sync(self.book, T0 + timedelta(hours=1))
        table.set_sort_labels(self.book.sort_column, self.book.descending)
        return table


def screen(app: App[None]) -> str:
    """The screen's text (as the SVG screenshot holds it)."""
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


def screen_tasks(app: TableApp) -> list[str]:
    """The task ids on screen, top to bottom."""
    return re.findall(r"T-\d{4}", screen(app))


def test_sorted_rows_move_one_agent_at_a_time() -> None:
    rows = SortedRows()
    rows.rebuild([("b", 2), ("a", 1), ("c", 3)])
    assert rows.ids(descending=False) == ["a", "b", "c"]
    assert rows.ids(descending=True) == ["c", "b", "a"]
    version = rows.version
    assert rows.place("a", 1) is False and rows.version == version  # same key: nothing moves
    assert rows.place("a", 5) is True
    assert rows.ids(descending=False) == ["b", "c", "a"]
    assert rows.index("a", descending=False) == 2 and rows.index("a", descending=True) == 0
    assert rows.place("d", 0)
    assert rows.at(0, descending=False) == "d"
    assert rows.remove("b") and not rows.remove("b")
    assert rows.ids(descending=False) == ["d", "c", "a"] and len(rows) == 3
    shuffled = [(f"id{i}", random.random()) for i in range(500)]
    rows.rebuild(shuffled[:250])
    for agent_id, value in shuffled[250:]:
        rows.place(agent_id, value)
    assert rows.ids(descending=False) == [
        i for i, _ in sorted(shuffled, key=lambda p: (p[1], p[0]))
    ]


async def test_a_thousand_rows_sort_filter_and_scroll() -> None:
    book = AgentBook()
    book.replace_all(state(n) for n in random.sample(range(1000), 1000))
    app = TableApp(book)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.sync()
        await pilot.pause()
        assert table.row_count == 1000
        assert screen_tasks(app)[:3] == ["T-0999", "T-0998", "T-0997"]  # newest first
        assert len(screen_tasks(app)) == 29  # only what fits is drawn
        assert len(table.built) <= 29

        book.sort_column, book.descending = "task", False
        app.sync()
        await pilot.pause()
        assert table.header_labels()[1] == "Task▲"
        assert table.selected_agent_id == state(999).agent_id  # the cursor follows its agent
        assert screen_tasks(app)[-1] == "T-0999"
        await pilot.press("home")
        await pilot.pause()
        assert screen_tasks(app)[:2] == ["T-0000", "T-0001"]
        await pilot.press("end")
        await pilot.pause()
        assert table.selected_agent_id == state(999).agent_id
        assert screen_tasks(app)[-1] == "T-0999"
        await pilot.press("home", "down", "down")
        assert table.selected_agent_id == state(2).agent_id

        book.filter_text = "T-012"
        app.sync()
        await pilot.pause()
        assert screen_tasks(app) == [f"T-{n:04d}" for n in range(120, 130)]
        assert table.row_count == 10
        book.filter_text = "failed"
        app.sync()
        await pilot.pause()
        assert table.row_count == 0 and table.selected_agent_id is None
        book.filter_text = ""
        book.descending = True
        app.sync()
        await pilot.pause()
        assert screen_tasks(app)[0] == "T-0999"


async def test_an_update_redraws_only_its_row_and_keeps_the_selection() -> None:
    book = AgentBook()
    book.replace_all(state(n) for n in range(1000))
    book.sort_column, book.descending = "task", False
    app = TableApp(book)
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.sync()
        await pilot.pause()
        await pilot.press("down", "down")  # T-0002
        await pilot.pause()
        before = table.built.copy()
        assert set(before) == {state(n).agent_id for n in range(29)}

        # a new state for one agent on screen and one far below: one row redrawn
        book.upsert(state(5, status="failed", version=1, error="boom"))
        book.upsert(state(900, status="completed", version=1))
        app.sync()
        await pilot.pause()
        drawn = table.built - before
        assert dict(drawn) == {state(5).agent_id: 1}
        assert "✖ failed" in screen(app)

        # activity lands in its row's last-activity column, and only that row is drawn
        before = table.built.copy()
        book.apply_event(
            Event(
                type=EventType.AGENT_ACTIVITY,
                agentId=state(3).agent_id,
                taskId="T-0003",
                data={"tool": "Edit", "summary": "src/app.py: rename handler"},
            )
        )
        app.sync()
        await pilot.pause()
        assert dict(table.built - before) == {state(3).agent_id: 1}
        assert "Edit: src/app.py: rename handler" in screen(app)

        # a re-sort moves rows (the cursor follows its agent), nothing is rebuilt from scratch
        book.sort_column = "status"
        app.sync()
        await pilot.pause()
        assert table.selected_agent_id == state(2).agent_id
        assert book.agents[state(5).agent_id].status is AgentStatus.FAILED
        shown = [a.task_id for a in book.visible()]
        assert shown[-2:] == ["T-0005", "T-0900"] or shown[-2:] == ["T-0900", "T-0005"]
        assert shown.index("T-0005") > shown.index("T-0001")  # running sorts before failed


async def test_a_click_selects_and_a_second_click_chooses() -> None:
    book = AgentBook()
    book.replace_all(state(n) for n in range(5))
    book.sort_column, book.descending = "task", False
    chosen: list[str] = []

    class ChoosingApp(TableApp):
        def on_agents_table_selected(self, message: AgentsTable.Selected) -> None:
            chosen.append(message.agent_id)

    app = ChoosingApp(book)
    async with app.run_test(size=(160, 12)) as pilot:
        table = app.sync()
        await pilot.pause()
        await pilot.click(AgentsTable, offset=(3, 3))  # line 3: the third row (T-0002)
        assert table.selected_agent_id == state(2).agent_id and chosen == []
        await pilot.click(AgentsTable, offset=(3, 3))
        assert chosen == [state(2).agent_id]
        await pilot.click(AgentsTable, offset=(3, 0))  # the header: nothing
        assert table.selected_agent_id == state(2).agent_id
