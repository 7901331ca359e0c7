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
from textual.widgets.data_table import ColumnKey, RowKey

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
        self._stale: set[RowKey] = set()
        self._batching = False

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column.label, key=column.key, width=column.width)

    def update_cell(
        self,
        row_key: RowKey | str,
        column_key: ColumnKey | str,
        value: Any,
        *,
        update_width: bool = False,
    ) -> None:
        """``DataTable.update_cell`` without its global cache reset.

        Textual's table invalidates every cached cell and line on any cell update, so each
        update re-renders the whole visible table (tens of ms for 200 agents on the shared event
        loop). Here only the changed row's cached renders are dropped (pinned textual 8.2.8).
        """
        row = row_key if isinstance(row_key, RowKey) else RowKey(row_key)
        column = column_key if isinstance(column_key, ColumnKey) else ColumnKey(column_key)
        if update_width or row not in self._row_locations or column not in self._column_locations:
            super().update_cell(row_key, column_key, value, update_width=update_width)
            return
        self._data[row][column] = value
        self._stale.add(row)
        if not self._batching:
            self._evict_stale()
        self.refresh()

    def _evict_stale(self) -> None:
        """Drop the cached renders of the rows changed since the last call (one pass)."""
        rows, self._stale = self._stale, set()
        if not rows:
            return
        indexes = {self._row_locations.get(row) for row in rows}
        cells, lines = self._cell_render_cache, self._row_render_cache
        for cell_key in [k for k in cells.keys() if k[0] in rows]:  # noqa: SIM118 (LRUCache)
            cells.discard(cell_key)
        for line_key in [k for k in lines.keys() if k[0] in rows]:  # noqa: SIM118
            lines.discard(line_key)
        renderables = self._row_renderable_cache
        for key in [k for k in renderables.keys() if k[1] in indexes]:  # noqa: SIM118
            renderables.discard(key)
        self._line_cache.clear()

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
        self._batching = True
        try:
            self._sync(book, now)
        finally:
            self._batching = False
            self._evict_stale()

    def _sync(self, book: AgentBook, now: datetime) -> None:
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
