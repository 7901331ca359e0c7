"""The global event stream, newest at the bottom, bounded, drawn with the line API.

A ``RichLog`` renders every line as it is written; at 100 events a second that is most of the
dashboard's work, for lines that scroll away unseen. This pane keeps the lines as ``Text`` and
renders only the few on screen (each once: the strips are cached per line).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.segment import Segment
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from core.models import Event
from mosaic_tui.format import Clock, event_text

MAX_LINES = 1000


class EventsPane(ScrollView):
    DEFAULT_CSS = """
    EventsPane {
        height: 7; border-top: solid $primary-darken-2; overflow-x: hidden;
        background: $surface;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: deque[list[Text | Strip | None]] = deque(maxlen=MAX_LINES)
        """``[text, its strip once drawn]`` per line."""
        self.lines_written = 0

    @property
    def texts(self) -> list[Text]:
        return [line[0] for line in self._lines]  # type: ignore[misc]

    @property
    def text(self) -> str:
        """Every line kept, as plain text."""
        return "\n".join(text.plain for text in self.texts)

    def add_events(self, events: Iterable[Event], clock: Clock) -> None:
        self._add(event_text(event, clock) for event in events)

    def note(self, message: str, style: str = "yellow") -> None:
        self._add([Text(message, style=style)])

    def _add(self, texts: Iterable[Text]) -> None:
        follow = self.scroll_offset.y >= self.max_scroll_y
        added = 0
        for text in texts:
            text.no_wrap = True
            self._lines.append([text, None])
            added += 1
        if not added:
            return
        self.lines_written += added
        self.virtual_size = Size(self.size.width, len(self._lines))
        if follow:
            # forced: the scrollbar the new lines need is not laid out yet
            self.scroll_to(y=self.max_scroll_y, animate=False, force=True, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        index = round(self.scroll_offset.y) + y
        if index >= len(self._lines):
            return Strip.blank(width, base)
        line = self._lines[index]
        strip = line[1]
        if not isinstance(strip, Strip):
            text = line[0]
            assert isinstance(text, Text)
            strip = Strip(Segment.apply_style(text.render(self.app.console), base), text.cell_len)
            line[1] = strip
        return strip.crop_extend(0, width, base)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        for line in self._lines:
            line[1] = None
