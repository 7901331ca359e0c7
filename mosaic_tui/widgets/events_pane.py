"""The global event stream, newest at the bottom, bounded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from core.models import Event
from mosaic_tui.format import Clock, event_text


class EventsPane(RichLog):
    DEFAULT_CSS = """
    EventsPane { height: 7; border-top: solid $primary-darken-2; overflow-x: hidden; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=1000, wrap=False, markup=False, highlight=False, **kwargs)
        self.lines_written = 0

    def add_events(self, events: Iterable[Event], clock: Clock) -> None:
        for event in events:
            self.write(event_text(event, clock))
            self.lines_written += 1

    def note(self, message: str, style: str = "yellow") -> None:
        self.write(Text(message, style=style))
        self.lines_written += 1
