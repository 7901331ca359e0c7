"""The diff view: an agent's change (live, pushed or kept) as a scrollable, coloured unified diff.

The text comes from ``EngineAPI.diff`` (``GET /agents/{id}/diff`` when attached). ``DiffView``
is a line-API widget: it keeps the lines and styles only the ones on screen, so a diff of tens
of thousands of lines opens at once. Colours follow the unified diff's syntax: file headers,
hunk headers, added and removed lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Header, Static

from core.errors import NotFound
from mosaic_tui.format import short_id

if TYPE_CHECKING:
    from mosaic_tui.app import MosaicApp

LOOK: tuple[tuple[str, str], ...] = (
    ("diff --git", "bold"),
    ("index ", "dim"),
    ("new file", "dim"),
    ("deleted file", "dim"),
    ("similarity", "dim"),
    ("rename ", "dim"),
    ("Binary files", "yellow"),
    ("+++", "bold"),
    ("---", "bold"),
    ("@@", "cyan"),
    ("+", "green"),
    ("-", "red"),
    ("\\", "dim"),
)


def line_style(line: str) -> str:
    """The Rich style of one line of a unified diff."""
    for prefix, style in LOOK:
        if line.startswith(prefix):
            return style
    return ""


def diff_stats(text: str) -> tuple[int, int, int]:
    """Files, added lines and removed lines of a unified diff."""
    files = added = removed = 0
    for line in text.splitlines():
        if line.startswith("diff --git"):
            files += 1
        elif line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return files, added, removed


class DiffView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    DiffView { height: 1fr; background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "scroll_up", "Up", show=False),
        Binding("down", "scroll_down", "Down", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("space", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "End", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[str] = []
        self._styles: dict[str, Style] = {}

    def show(self, text: str) -> None:
        self.lines = [line.expandtabs(4) for line in text.splitlines()]
        width = max((cell_len(line) for line in self.lines), default=0)
        self.virtual_size = Size(width + 1, len(self.lines))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        index = scroll_y + y
        if index >= len(self.lines):
            return Strip.blank(width, base)
        line = self.lines[index]
        look = line_style(line)
        style = self._styles.get(look)
        if style is None:
            style = self._styles[look] = Style.parse(look) if look else Style()
        strip = Strip([Segment(line, base + style)], cell_len(line))
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()


class DiffScreen(Screen[None]):
    DEFAULT_CSS = """
    DiffScreen #diff-title { height: 1; padding: 0 1; background: $boost; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("q", "back", "Back", show=False),
        Binding("r", "reload", "Reload"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, agent_id: str) -> None:
        super().__init__()
        self.agent_id = agent_id
        self.text: str | None = None

    @property
    def mosaic(self) -> MosaicApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Diff of agent {short_id(self.agent_id)}: loading…", id="diff-title")
        yield DiffView(id="diff")
        yield Footer()

    def on_mount(self) -> None:
        agent = self.mosaic.book.agents.get(self.agent_id)
        self.sub_title = f"diff · {agent.task_id}" if agent else "diff"
        self.query_one(DiffView).focus()
        self.action_reload()

    def action_reload(self) -> None:
        self.run_worker(self._load(), group="diff", exclusive=True)

    async def _load(self) -> None:
        title = self.query_one("#diff-title", Static)
        who = f"agent {short_id(self.agent_id)}"
        agent = self.mosaic.book.agents.get(self.agent_id)
        if agent is not None:
            who += f" ({agent.task_id}, {agent.status.value})"
        try:
            text = await self.mosaic.engine.diff(self.agent_id)
        except NotFound as exc:
            title.update(Text(f"No diff for {who}: {exc.message}"))
            self.query_one(DiffView).show("")
            return
        except Exception as exc:  # connection lost and the like: said, not raised
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            title.update(Text(f"Diff of {who} failed: {message}"))
            return
        self.text = text
        files, added, removed = diff_stats(text)
        if not text.strip():
            title.update(Text(f"Diff of {who}: no changes"))
        else:
            title.update(
                Text(
                    f"Diff of {who}: {files} file{'s' if files != 1 else ''}, "
                    f"+{added} −{removed}  (r reloads)"
                )
            )
        self.query_one(DiffView).show(text)

    def action_back(self) -> None:
        self.dismiss(None)
