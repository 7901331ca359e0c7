"""The detail view of one agent: its state, result, timeline of events and log tail, live."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Static

from core.errors import NotFound, OrchestratorError
from core.models import AgentState, Event
from mosaic_tui.format import Clock, age, duration, event_text, size, status_text

if TYPE_CHECKING:
    from mosaic_tui.app import MosaicApp


def _fields(agent: AgentState, clock: Clock, cpu: float | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right", no_wrap=True)
    grid.add_column()

    def when(value: Any) -> str:
        return clock.hms(value) if value is not None else "-"

    grid.add_row("Agent", Text(agent.agent_id))
    grid.add_row("Task", Text(agent.task_id, style="bold"))
    grid.add_row("Status", status_text(agent.status))
    grid.add_row("Type", Text(f"{agent.agent_type.value}  (gates: {agent.gate_profile.value})"))
    grid.add_row(
        "Times",
        Text(
            f"spawned {when(agent.spawned_at)}  started {when(agent.started_at)}  "
            f"ended {when(agent.completed_at)}  age {age(agent, clock.now())}"
        ),
    )
    grid.add_row("Worktree", Text(agent.worktree or "-"))
    branch = agent.branch or (agent.result.branch if agent.result else None)
    grid.add_row("Branch", Text(branch or "-"))
    grid.add_row("Instance", Text(f"{agent.instance or '-'}  attempts {agent.attempts}"))
    u = agent.usage
    grid.add_row(
        "Usage",
        Text(
            f"{u.input_tokens} in / {u.output_tokens} out tokens  ${u.cost_usd:.4f}  "
            f"{u.turns} turns"
        ),
    )
    res = agent.resources or {}
    if res:
        grid.add_row(
            "Resources",
            Text(
                f"cpu {'-' if cpu is None else f'{cpu:.0f}%'} "
                f"({res.get('cpu_seconds', 0):.1f}s)  mem {size(res.get('memory_bytes'))}  "
                f"pids {res.get('pids', 0):.0f}  runtime {duration(res.get('runtime_s'))}"
            ),
        )
    if agent.summary:
        grid.add_row("Summary", Text(agent.summary))
    if agent.error:
        grid.add_row("Error", Text(agent.error, style="bold red"))
    return grid


def _result(agent: AgentState) -> RenderableType | None:
    result = agent.result
    if result is None:
        return None
    parts: list[RenderableType] = []
    head = Text("Result  ", style="bold underline")
    head.append(f"commit {(result.commit or '-')[:12]}  ", style="")
    head.append(
        "pushed" if result.pushed else "not pushed", style="green" if result.pushed else "yellow"
    )
    if result.exit_code is not None:
        head.append(f"  exit {result.exit_code}")
    parts.append(head)
    if result.gates:
        gates = Table(box=None, padding=(0, 1), show_edge=False)
        for name in ("gate", "result", "time", "output"):
            gates.add_column(name, style="dim" if name == "output" else "")
        for gate in result.gates:
            passed, skipped = gate.get("passed"), gate.get("skipped")
            verdict = (
                Text("– skipped", style="yellow")
                if skipped
                else Text("✔ passed", style="green")
                if passed
                else Text("✖ failed", style="bold red")
            )
            tail = str(gate.get("output") or gate.get("reason") or "").strip().splitlines()
            gates.add_row(
                str(gate.get("name", "?")),
                verdict,
                duration(gate.get("duration_s") or gate.get("duration")),
                tail[-1][:60] if tail else "",
            )
        parts.append(gates)
    if result.scan is not None:
        findings = result.scan.get("findings") or []
        parts.append(
            Text(
                f"Secret scan: {len(findings)} finding(s)" if findings else "Secret scan: clean",
                style="bold red" if findings else "green",
            )
        )
    if result.conflicts:
        parts.append(Text(f"Conflicts: {', '.join(result.conflicts)}", style="red"))
    if result.verdict:
        parts.append(Text(f"Verdict: {result.verdict.get('decision') or result.verdict}"))
    return Group(*parts)


class DetailScreen(Screen[None]):
    DEFAULT_CSS = """
    DetailScreen #info { height: auto; max-height: 60%; padding: 0 1; }
    DetailScreen #logs { height: 1fr; }
    DetailScreen RichLog { width: 1fr; border: round $primary-darken-2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("backspace", "back", "Back", show=False),
        Binding("k", "kill", "Kill agent"),
        Binding("d", "diff", "Diff"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, agent_id: str) -> None:
        super().__init__()
        self.agent_id = agent_id
        self._events_shown = 0
        self._tail_shown = 0

    @property
    def mosaic(self) -> MosaicApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="info"):
            yield Static(id="fields")
            yield Static(id="result")
        with Horizontal(id="logs"):
            timeline = RichLog(id="timeline", wrap=False, markup=False, max_lines=2000)
            timeline.border_title = "Timeline"
            yield timeline
            tail = RichLog(id="tail", wrap=True, markup=False, max_lines=2000)
            tail.border_title = "Log tail"
            yield tail
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.set_interval(1.0, self.poll)
        self.poll()

    def poll(self) -> None:
        self.run_worker(self._fetch(), group="detail", exclusive=True)

    async def _fetch(self) -> None:
        try:
            agent = await self.mosaic.engine.status(self.agent_id)
        except NotFound:
            self.mosaic.note(f"agent {self.agent_id[:8]} no longer exists", "yellow")
            return
        except (OrchestratorError, OSError) as exc:
            self.mosaic.note(f"status: {getattr(exc, 'message', exc)}", "red")
            return
        self.mosaic.book.upsert(agent)
        self.show()

    def show(self) -> None:
        book = self.mosaic.book
        agent = book.agents.get(self.agent_id)
        if agent is None:
            self.query_one("#fields", Static).update(Text(f"Loading {self.agent_id}…"))
            return
        self.sub_title = f"{agent.task_id} · {agent.status.value}"
        clock = self.mosaic.clock
        self.query_one("#fields", Static).update(
            _fields(agent, clock, book.cpu_percent(self.agent_id))
        )
        result = _result(agent)
        self.query_one("#result", Static).update(result if result is not None else "")
        self.add_events(self.mosaic.history.get(self.agent_id, ()), clock)
        tail = list(book.tails.get(self.agent_id, ()))
        log = self.query_one("#tail", RichLog)
        if len(tail) < self._tail_shown:
            log.clear()
            self._tail_shown = 0
        for line in tail[self._tail_shown :]:
            log.write(Text(line))
        self._tail_shown = len(tail)

    def add_events(self, events: Iterable[Event], clock: Clock) -> None:
        events = list(events)
        timeline = self.query_one("#timeline", RichLog)
        if len(events) < self._events_shown:  # the history was trimmed: start over
            timeline.clear()
            self._events_shown = 0
        fresh = events[self._events_shown :]
        for event in fresh:
            timeline.write(event_text(event, clock))
        self._events_shown = len(events)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_kill(self) -> None:
        self.mosaic.confirm_kill(self.agent_id)

    def action_diff(self) -> None:
        from mosaic_tui.screens.diff import DiffScreen

        self.app.push_screen(DiffScreen(self.agent_id))
