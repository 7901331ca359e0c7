"""The agents table: renders the ``AgentBook`` incrementally.

``sync`` diffs what the book shows against what the table holds: it adds and removes rows,
rewrites only the cells whose text changed (``update_cell``) and reorders rows in place
(``DataTable.sort``) instead of rebuilding, so a refresh of 200 agents stays cheap.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from mosaic_tui.book import COLUMNS, AgentBook

TICKING = frozenset({"age", "cpu"})
"""Columns that change with the clock alone: off-screen rows skip those updates."""


class AgentsTable(DataTable[Any]):
    DEFAULT_CSS = """
    AgentsTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._shown: dict[str, dict[str, tuple[str, str]]] = {}
        self._order: list[str] = []
        self._labels: tuple[str, bool] | None = None

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column.label, key=column.key, width=column.width)

    @property
    def selected_agent_id(self) -> str | None:
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        return str(self.ordered_rows[self.cursor_row].key.value)

    @property
    def shown_ids(self) -> list[str]:
        return list(self._order)

    def select(self, agent_id: str) -> None:
        if agent_id in self._shown:
            self.move_cursor(row=self.get_row_index(agent_id))

    def set_sort_labels(self, sort_column: str, descending: bool) -> None:
        if self._labels == (sort_column, descending):
            return
        self._labels = (sort_column, descending)
        arrow = "▼" if descending else "▲"
        for column in COLUMNS:
            label = f"{column.label}{arrow}" if column.key == sort_column else column.label
            self.columns[column.key].label = Text(label, style="bold" if arrow in label else "")
        self._require_update_dimensions = True
        self.refresh()

    def sync(self, book: AgentBook, now: datetime) -> None:
        selected = self.selected_agent_id
        visible = book.visible()
        wanted = [a.agent_id for a in visible]
        keep = set(wanted)
        for gone in [aid for aid in self._shown if aid not in keep]:
            self.remove_row(gone)
            del self._shown[gone]
        top = round(self.scroll_offset.y)
        on_screen = range(max(0, top - 2), top + self.size.height + 2)
        for index, agent in enumerate(visible):
            cells = book.row(agent, now)
            signature = {key: (cell.plain, str(cell.style)) for key, cell in cells.items()}
            before = self._shown.get(agent.agent_id)
            if before is None:
                self.add_row(*(cells[c.key] for c in COLUMNS), key=agent.agent_id)
            else:
                changed = [key for key, sig in signature.items() if before[key] != sig]
                if index not in on_screen and set(changed) <= TICKING:
                    continue  # off-screen clock ticks wait until the row is scrolled into view
                for key in changed:
                    self.update_cell(agent.agent_id, key, cells[key])
            self._shown[agent.agent_id] = signature
        current = [str(row.key.value) for row in self.ordered_rows]
        if current != wanted:
            rank = {aid: index for index, aid in enumerate(wanted)}
            self.sort("id", key=lambda cell: rank[cell.agent_id])
        self._order = wanted
        if selected is not None and selected in keep:
            index = wanted.index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)
