"""The agents table re-renders exactly the rows whose cells changed (its own cache eviction)."""

from __future__ import annotations

from textual.app import App, ComposeResult

from mosaic_tui.book import COLUMNS
from mosaic_tui.widgets import AgentsTable


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield AgentsTable()


async def test_updated_cells_show_on_screen_and_others_stay() -> None:
    app = TableApp()
    async with app.run_test(size=(160, 12)) as pilot:
        table = app.query_one(AgentsTable)
        for n in range(3):
            cells = [f"{c.key}-{n}" for c in COLUMNS]
            table.add_row(*cells, key=f"agent-{n}")
        await pilot.pause()
        assert "activity-1" in app.export_screenshot()
        table._batching = True  # as during sync: several updates, one eviction
        table.update_cell("agent-1", "activity", "fresh-activity")
        table.update_cell("agent-2", "task", "fresh-task")
        table._batching = False
        table._evict_stale()
        await pilot.pause()
        screen = app.export_screenshot()
        assert "fresh-activity" in screen and "activity-1" not in screen
        assert "fresh-task" in screen and "activity-2" in screen and "task-0" in screen
        table.update_cell("agent-0", "task", "direct-update")  # outside a batch
        await pilot.pause()
        assert "direct-update" in app.export_screenshot()
