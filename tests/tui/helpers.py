"""What a user sees: the table's rows, the events pane's lines, the queue panel's text."""

from __future__ import annotations

import io

from rich.console import Console
from textual.widgets import RichLog, Static

from mosaic_tui.app import MosaicApp
from mosaic_tui.widgets import AgentsTable, EventsPane, QueuePanel


def rows(app: MosaicApp) -> list[list[str]]:
    table = app.dashboard.query_one(AgentsTable)
    return [table.row_texts(index) for index in range(table.row_count)]


def row_for(app: MosaicApp, task_id: str) -> list[str] | None:
    return next((r for r in rows(app) if r[1] == task_id), None)


def status_of(app: MosaicApp, task_id: str) -> str | None:
    row = row_for(app, task_id)
    return row[2] if row else None


def log_text(log: RichLog) -> str:
    return "\n".join(strip.text for strip in log.lines)


def events_text(app: MosaicApp) -> str:
    return app.dashboard.query_one(EventsPane).text


def queue_text(app: MosaicApp) -> str:
    return app.dashboard.query_one(QueuePanel).text.plain


def static_text(widget: Static) -> str:
    """The plain text a Static shows (whatever renderable it holds)."""
    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(content)
    return console.export_text()
