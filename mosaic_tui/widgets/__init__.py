"""The dashboard's widgets."""

from mosaic_tui.widgets.agents_table import AgentsTable
from mosaic_tui.widgets.events_pane import EventsPane
from mosaic_tui.widgets.queue_panel import QueuePanel

__all__ = ["AgentsTable", "EventsPane", "QueuePanel"]
