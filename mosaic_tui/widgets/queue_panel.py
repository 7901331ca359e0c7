"""The queue panel: counts by state, paused flag, workers and concurrency, agents by status."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from core.engine_api import QueueStats
from core.models import AgentStatus
from mosaic_tui.format import STATUS_LOOK

QUEUE_FIELDS = ("waiting", "prioritized", "delayed", "active", "completed", "failed")


def paused_text(stats: QueueStats | None) -> Text:
    if stats is None:
        return Text("… connecting", style="dim")
    if stats.paused:
        return Text("⏸ PAUSED", style="bold black on yellow")
    return Text("▶ RUNNING", style="bold green")


def render_queue(
    stats: QueueStats | None, counts: dict[AgentStatus, int], *, wide: bool, problem: str = ""
) -> Text:
    text = Text()
    text.append("Queue ", style="bold")
    text.append_text(paused_text(stats))
    sep = "\n" if wide else "  "
    if stats is not None:
        text.append(sep if wide else "  ")
        text.append(
            f"workers {stats.workers}  concurrency {stats.concurrency}"
            f"  live {stats.live_agents}/{stats.max_concurrent_agents}"
        )
        text.append("\n")
        for index, name in enumerate(QUEUE_FIELDS):
            if index:
                text.append("\n" if wide else "  ")
            value = getattr(stats, name)
            text.append(f"{name} ", style="dim")
            text.append(str(value), style="bold" if value else "")
    text.append("\n")
    text.append("Agents" + (sep if wide else " "), style="bold")
    for index, status in enumerate(AgentStatus):
        if index:
            text.append("\n" if wide else "  ")
        symbol, style = STATUS_LOOK[status]
        text.append(f"{symbol} {status.value} ", style=style)
        text.append(str(counts.get(status, 0)), style="bold")
    if problem:
        text.append("\n")
        text.append(f"⚠ {problem}", style="bold red")
    return text


class QueuePanel(Static):
    DEFAULT_CSS = """
    QueuePanel { height: auto; padding: 0 1; background: $boost; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.stats: QueueStats | None = None
        self.counts: dict[AgentStatus, int] = {}
        self.problem = ""
        self.wide = False
        self.text = Text()

    def show(
        self,
        stats: QueueStats | None,
        counts: dict[AgentStatus, int],
        *,
        wide: bool,
        problem: str = "",
    ) -> None:
        self.stats, self.counts, self.wide, self.problem = stats, counts, wide, problem
        self.text = render_queue(stats, counts, wide=wide, problem=problem)
        self.update(self.text)
