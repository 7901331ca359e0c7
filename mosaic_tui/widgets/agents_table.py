"""The agents table: a line-API widget that draws only the rows on screen.

The ``AgentBook`` keeps the sorted, filtered order (``SortedRows``); this widget keeps no rows
of its own. ``render_line`` asks the book which agent sits at a screen line and draws it from a
per-agent cache of strips (keyed by what the cells say), so a repaint of an unchanged row costs
a dictionary lookup. ``sync`` repaints the whole viewport only when the order changed (or the
clock moved the ages); otherwise it repaints just the lines of the agents that changed. Line 0 is
the header and never scrolls away. No Textual internals are touched: ``ScrollView`` plus
``render_line`` is the public line API.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from mosaic_tui.book import COLUMNS, AgentBook, Cell

PAD = 1
MIN_LAST = 20
"""The last column (activity) takes the width left over, at least this much."""


class AgentsTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    AgentsTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        &:focus { background-tint: $foreground 5%; }
        & > .agents-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .agents-table--even { background: $surface-lighten-1 50%; }
        &:dark > .agents-table--even { background: $surface-darken-1 40%; }
        & > .agents-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .agents-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "agents-table--header",
        "agents-table--even",
        "agents-table--cursor",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    class Selected(Message):
        """The operator chose a row (a click on the highlighted row)."""

        def __init__(self, agent_id: str) -> None:
            super().__init__()
            self.agent_id = agent_id

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.book = AgentBook()
        self.now = datetime.now(UTC)
        self.cursor_row = 0
        self._selected: str | None = None
        self._version = -1
        self._now_text = ""
        self._labels: tuple[str, bool] = ("", False)
        self._widths: list[int] = []
        self._strips: dict[str, _Row] = {}
        self._looks: dict[str, Style] = {}
        """The widget's own and its component classes' Rich styles, until the styles change."""
        self.built: Counter[str] = Counter()
        """How often each agent's row was drawn afresh (a cache miss): what tests count."""

    # -- what is shown -------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.book.rows)

    @property
    def shown_ids(self) -> list[str]:
        return self.book.rows.ids(descending=self.book.descending)

    @property
    def selected_agent_id(self) -> str | None:
        if not self.row_count:
            return None
        return self.book.shown_at(min(self.cursor_row, self.row_count - 1))

    def on_screen_ids(self) -> list[str]:
        """The agents whose rows are on screen now."""
        top = round(self.scroll_offset.y)
        end = min(self.row_count, top + self._body_height())
        return [self.book.shown_at(index) for index in range(top, end)]

    def row_texts(self, index: int) -> list[str]:
        """The plain text of the cells of row ``index`` (as drawn, before cropping)."""
        agent = self.book.agents[self.book.shown_at(index)]
        return [text for text, _, _ in self.book.row(agent, self.now)]

    # -- keeping up with the book --------------------------------------------------------------
    def sync(self, book: AgentBook, now: datetime) -> None:
        """Show what ``book`` says now: repaint the viewport if the order (or the clock) moved,
        else only the lines of the agents that changed."""
        self.book, self.now = book, now
        changed = book.take_changed()
        for agent_id in changed:
            if agent_id not in book.agents:
                self._strips.pop(agent_id, None)
        tick = now.strftime("%Y%m%d%H%M%S")
        height = len(book.rows) + 1
        if self.virtual_size.height != height:
            self.virtual_size = Size(self._table_width(), height)
        if book.rows.version != self._version or tick != self._now_text:
            self._version, self._now_text = book.rows.version, tick
            self._follow_selection()
            self.refresh()
            return
        top = round(self.scroll_offset.y)
        for agent_id in changed:
            index = book.index_of(agent_id)
            if index is not None and top <= index < top + self._body_height():
                self.refresh(Region(0, index - top + 1, self.size.width, 1))

    def set_sort_labels(self, sort_column: str, descending: bool) -> None:
        if self._labels != (sort_column, descending):
            self._labels = (sort_column, descending)
            self.refresh(Region(0, 0, self.size.width, 1))

    def _follow_selection(self) -> None:
        """Keep the cursor on the selected agent when rows move, else on the same line."""
        count = self.row_count
        if not count:
            self.cursor_row = 0
            return
        index = self.book.index_of(self._selected) if self._selected else None
        if index is None:
            index = min(self.cursor_row, count - 1)
            self._selected = self.book.shown_at(index)
        if index != self.cursor_row:
            self.cursor_row = index
            self._scroll_to_cursor()

    def _body_height(self) -> int:
        """How many rows fit under the header (less a horizontal scrollbar, if shown)."""
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_to_cursor(self) -> bool:
        """Scroll so the cursor's row is on screen; answers whether it scrolled."""
        body = self._body_height()
        top = round(self.scroll_offset.y)
        index = self.cursor_row
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + body:
            self.scroll_to(y=index - body + 1, animate=False, immediate=True)
        else:
            return False
        return True

    # -- cursor and keys -----------------------------------------------------------------------
    def select(self, agent_id: str) -> None:
        index = self.book.index_of(agent_id)
        if index is not None:
            self._move(index)

    def _move(self, index: int) -> None:
        count = self.row_count
        if not count:
            return
        index = max(0, min(index, count - 1))
        old = self.cursor_row
        self.cursor_row = index
        self._selected = self.book.shown_at(index)
        if not self._scroll_to_cursor():
            top = round(self.scroll_offset.y)
            for row in {old, index}:
                self.refresh(Region(0, row - top + 1, self.size.width, 1))

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor_row + delta)

    def action_page(self, pages: int) -> None:
        self._move(self.cursor_row + pages * max(1, self._body_height() - 1))

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(self.row_count - 1)

    def on_click(self, event: events.Click) -> None:
        if event.y < 1:
            return
        index = round(self.scroll_offset.y) + event.y - 1
        if 0 <= index < self.row_count:
            already = index == self.cursor_row
            self._move(index)
            if already:
                self.post_message(self.Selected(self.book.shown_at(index)))

    # -- drawing -------------------------------------------------------------------------------
    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()
        self._looks.clear()

    def _on_focus(self, event: events.Focus) -> None:
        self._forget_looks()
        super()._on_focus(event)

    def _on_blur(self, event: events.Blur) -> None:
        self._forget_looks()
        super()._on_blur(event)

    def _forget_looks(self) -> None:
        self._looks.clear()
        for row in self._strips.values():
            row.styled = [None, None, None]

    def _look(self, name: str) -> Style:
        """``rich_style`` (name "") or a component class's style on top of it, cached: computing
        them walks the DOM, which would otherwise cost more than drawing the row."""
        look = self._looks.get(name)
        if look is None:
            base = self.rich_style
            look = base + self.get_component_rich_style(name) if name else base
            self._looks[name] = look
        return look

    def on_resize(self, event: events.Resize) -> None:
        self._widths = []
        self._strips.clear()
        self.virtual_size = Size(self._table_width(), len(self.book.rows) + 1)

    def _column_widths(self) -> list[int]:
        if not self._widths:
            fixed = [c.width or 8 for c in COLUMNS[:-1]]
            used = sum(fixed) + 2 * PAD * len(COLUMNS)
            room = self.size.width - self.styles.scrollbar_size_vertical  # room for a scrollbar
            last = max(MIN_LAST, room - used)
            self._widths = [*fixed, last]
        return self._widths

    def _table_width(self) -> int:
        return sum(self._column_widths()) + 2 * PAD * len(COLUMNS)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self._look("")
        if y == 0:
            strip = self._header(base)
        else:
            index = scroll_y + y - 1
            if index >= self.row_count:
                return Strip.blank(width, base)
            strip = self._row(self.book.shown_at(index), index, base)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def header_labels(self) -> list[str]:
        """The column labels, the sort column's with its direction (▲ ascending, ▼ descending)."""
        column_key, descending = self._labels
        arrow = "▼" if descending else "▲"
        return [f"{c.label}{arrow}" if c.key == column_key else c.label for c in COLUMNS]

    def _header(self, base: Style) -> Strip:
        style = self._look("agents-table--header")
        return self._strip([(label, "", False) for label in self.header_labels()], style)

    def _row(self, agent_id: str, index: int, base: Style) -> Strip:
        agent = self.book.agents[agent_id]
        activity = self.book.activity.get(agent_id)
        width = self._table_width()
        kind = 2 if index == self.cursor_row else index % 2
        row = self._strips.get(agent_id)
        if row is None or not row.holds(agent, activity, self._now_text, width):
            # the state, its activity or the clock moved: what do the cells say now?
            cells = self.book.row(agent, self.now)
            if row is None or row.cells != cells or row.width != width:
                row = _Row(cells, width, self._strip(cells, Style()))
                self.built[agent_id] += 1
            row.agent, row.activity, row.tick = agent, activity, self._now_text
            self._strips[agent_id] = row
        styled = row.styled[kind]
        if styled is None:
            if kind == 2:
                cursor = self._look("agents-table--cursor")
                styled = Strip(Segment.apply_style(row.strip, post_style=cursor), width)
            else:
                styled = row.strip.apply_style(self._look("agents-table--even") if kind else base)
            row.styled[kind] = styled
        return styled

    def _strip(self, cells: list[Cell] | tuple[Cell, ...], style: Style) -> Strip:
        segments: list[Segment] = []
        pad = " " * PAD
        for (text, cell_style, right), width in zip(cells, self._column_widths(), strict=True):
            if len(text) > width:
                text = text[: width - 1] + "…"
            body = text.rjust(width) if right else text.ljust(width)
            body = set_cell_size(body, width)
            segments.append(Segment(pad + body + pad, style + Style.parse(cell_style)))
        return Strip(segments, self._table_width())


class _Row:
    """One agent's drawn row: its cells, the strip they make, and that strip as drawn plain,
    zebra-striped and under the cursor. ``holds`` says whether the row may still be current
    without asking the book (the same state object, activity and clock second)."""

    __slots__ = ("activity", "agent", "cells", "strip", "styled", "tick", "width")

    def __init__(self, cells: tuple[Cell, ...], width: int, strip: Strip) -> None:
        self.cells = cells
        self.width = width
        self.strip = strip
        self.styled: list[Strip | None] = [None, None, None]
        self.agent: object = None
        self.activity: str | None = None
        self.tick = ""

    def holds(self, agent: object, activity: str | None, tick: str, width: int) -> bool:
        return (
            self.agent is agent
            and self.activity == activity
            and self.tick == tick
            and self.width == width
        )
