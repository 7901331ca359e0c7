"""Confirmations: kill one agent, kill all (type KILL), quit the local orchestrator.

Each is a ``Dialog``: a box centred over the dimmed screen behind it, so the operator still sees
what they are about to kill. Textual scopes a class's ``DEFAULT_CSS`` to that class: a rule is
prefixed with the class's type name unless its selector starts with it. So the rules name
``Dialog`` first (a bare ``ModalScreen { align: ... }`` became ``Dialog ModalScreen``, which
matches nothing), and subclasses match ``Dialog`` as a type.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from core.models import AgentState
from mosaic_tui.format import short_id, status_text

KILL_WORD = "KILL"


class Dialog(ModalScreen[bool]):
    """A modal question: centred, over the dimmed screen it was asked from."""

    DEFAULT_CSS = """
    Dialog { align: center middle; background: $background 60%; }
    Dialog > .dialog {
        width: 64; max-width: 95%; height: auto; max-height: 100%; padding: 1 2;
        border: thick $error; background: $surface;
    }
    Dialog .title { text-style: bold; color: $error; margin-bottom: 1; }
    Dialog .hint { color: $text-muted; margin-top: 1; }
    Dialog .problem { color: $error; text-style: bold; height: auto; }
    Dialog .buttons { height: auto; margin-top: 1; align-horizontal: right; }
    Dialog .buttons Button { margin-left: 1; }
    """


class _YesNo(Dialog):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]
    yes_label = "Yes (y)"

    def body(self) -> ComposeResult:  # pragma: no cover - overridden
        yield from ()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield from self.body()
            with Horizontal(classes="buttons"):
                yield Button("Cancel (n/Esc)", id="no")
                yield Button(self.yes_label, id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")


class ConfirmKill(_YesNo):
    """Kill one agent: ``y`` confirms, ``n``/Esc/Cancel keeps it running."""

    yes_label = "Kill (y)"

    def __init__(self, agent: AgentState) -> None:
        super().__init__()
        self.agent = agent

    def body(self) -> ComposeResult:
        line = Text()
        line.append(f"Kill agent {short_id(self.agent.agent_id)} ")
        line.append(f"(task {self.agent.task_id}, ")
        line.append_text(status_text(self.agent.status))
        line.append(")?")
        yield Label("Kill agent", classes="title")
        yield Static(line)
        yield Static(
            "Its sandbox is stopped (TERM, then KILL) and its worktree removed.", classes="hint"
        )


class ConfirmQuit(_YesNo):
    """Quit the local dashboard: the engine stops, killing this instance's live agents."""

    yes_label = "Quit and stop (y)"

    def __init__(self, live: int) -> None:
        super().__init__()
        self.live = live

    def body(self) -> ComposeResult:
        yield Label("Quit Mosaic Orchestrator", classes="title")
        agents = "agent" if self.live == 1 else "agents"
        yield Static(
            f"The orchestrator runs in this process: quitting stops it and kills "
            f"{self.live} live {agents}."
        )
        yield Static(
            "To keep agents running, run `mosaic-orchestrator --headless` and "
            "`mosaic-orchestrator attach URL` instead.",
            classes="hint",
        )


class ConfirmKillAll(Dialog):
    """Kill every agent: only typing KILL and Enter confirms, so no stray key can do it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, live: int) -> None:
        super().__init__()
        self.live = live

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("KILL ALL AGENTS", classes="title")
            agents = "agent" if self.live == 1 else "agents"
            yield Static(
                f"This kills every live agent on every instance ({self.live} {agents} "
                "known here) and removes their worktrees."
            )
            yield Static(f"Type {KILL_WORD} and press Enter to confirm; Esc cancels.")
            yield Input(placeholder=KILL_WORD, id="word")
            yield Static("", id="problem", classes="problem")

    def on_mount(self) -> None:
        self.query_one("#word", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == KILL_WORD:
            self.dismiss(True)
            return
        self.query_one("#problem", Static).update(
            f"Not confirmed: type {KILL_WORD} in capitals (or press Esc to cancel)."
        )
        event.input.value = ""

    def action_cancel(self) -> None:
        self.dismiss(False)
