"""The main screen: queue panel, agents table, events pane, filter line, and their keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from mosaic_tui.widgets import AgentsTable, EventsPane, QueuePanel

if TYPE_CHECKING:
    from mosaic_tui.app import MosaicApp

WIDE_AT = 120


class DashboardScreen(Screen[None]):
    DEFAULT_CSS = """
    DashboardScreen #body { layout: vertical; height: 1fr; }
    DashboardScreen #center { height: 1fr; }
    DashboardScreen #filter { dock: bottom; display: none; }
    DashboardScreen #filter.-shown { display: block; }
    DashboardScreen.-wide #body { layout: horizontal; }
    DashboardScreen.-wide QueuePanel {
        width: 30; height: 1fr; padding: 1 1; border-right: vkey $primary-darken-2;
    }
    DashboardScreen.-wide EventsPane { height: 40%; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("k", "kill", "Kill"),
        Binding("K", "kill_all", "Kill all"),
        Binding("ctrl+k", "kill_all", "Kill all", show=False),
        Binding("n", "spawn", "Spawn"),
        Binding("enter", "details", "Details", show=False),
        Binding("p", "toggle_pause", "Pause"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit_dashboard", "Quit"),
    ]

    @property
    def mosaic(self) -> MosaicApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with Container(id="body"):
            yield QueuePanel(id="queue")
            with Vertical(id="center"):
                yield AgentsTable(id="agents")
                yield EventsPane(id="events")
        yield Input(
            placeholder="filter: words that must all match id, task, type or status", id="filter"
        )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(AgentsTable).focus()

    def on_resize(self, event: events.Resize) -> None:
        wide = event.size.width >= WIDE_AT
        if wide != self.has_class("-wide"):
            self.set_class(wide, "-wide")
            self.mosaic.render_queue()

    @property
    def wide(self) -> bool:
        return self.has_class("-wide")

    @property
    def table(self) -> AgentsTable:
        return self.query_one(AgentsTable)

    # -- keys ----------------------------------------------------------------------------------
    def action_kill(self) -> None:
        agent_id = self.table.selected_agent_id
        if agent_id is None:
            self.mosaic.notify("No agent selected.", severity="warning")
            return
        self.mosaic.confirm_kill(agent_id)

    def action_kill_all(self) -> None:
        self.mosaic.confirm_kill_all()

    def action_spawn(self) -> None:
        self.mosaic.open_spawn_form()

    def action_details(self) -> None:
        agent_id = self.table.selected_agent_id
        if agent_id is not None:
            self.mosaic.open_details(agent_id)

    def on_agents_table_selected(self, event: AgentsTable.Selected) -> None:
        event.stop()
        self.mosaic.open_details(event.agent_id)

    def action_toggle_pause(self) -> None:
        self.mosaic.toggle_pause()

    def action_sort(self) -> None:
        self.mosaic.book.cycle_sort()  # the header marks the column (▲/▼): no toast to lay out
        self.mosaic.refresh_table()

    def action_reverse_sort(self) -> None:
        self.mosaic.book.reverse_sort()
        self.mosaic.refresh_table()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.mosaic.book.filter_text = event.value
            self.mosaic.refresh_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.stop()
            if not event.value.strip():
                event.input.remove_class("-shown")
            self.table.focus()

    def on_key(self, event: events.Key) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            box.value = ""
            box.remove_class("-shown")
            self.table.focus()
