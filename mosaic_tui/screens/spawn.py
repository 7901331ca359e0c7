"""The spawn form: the fields of ``POST /agents/spawn``, validated by the same ``SpawnRequest``.

A validation message (or the engine's refusal) shows in the form, which stays open with what
the operator typed; Esc closes it but the draft is kept for next time.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static, TextArea

from core.engine_api import EngineAPI, SpawnResponse
from core.errors import OrchestratorError
from core.models import AgentType, GateProfile, SpawnRequest

TEXT_FIELDS = ("task_id", "priority", "repository", "branch", "work_items")
DEFAULT_DRAFT: dict[str, str] = {
    "task_id": "",
    "agent_type": AgentType.WORKER.value,
    "gate_profile": "",
    "priority": "5",
    "repository": "",
    "branch": "main",
    "work_items": "",
    "instructions": "",
}


def validation_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"] if p != "context") or "request"
        lines.append(f"{field}: {err['msg']}")
    return "\n".join(lines)


def build_request(draft: dict[str, str]) -> SpawnRequest:
    """The request the form describes (raises ``ValidationError`` with pydantic's messages)."""
    context: dict[str, Any] = {
        "repository": draft["repository"],
        "branch": draft["branch"] or "main",
        "workItems": [item.strip() for item in draft["work_items"].split(",") if item.strip()],
    }
    if draft["instructions"].strip():
        context["instructions"] = draft["instructions"]
    body: dict[str, Any] = {
        "taskId": draft["task_id"],
        "agentType": draft["agent_type"],
        "priority": draft["priority"].strip() or "5",
        "context": context,
    }
    if draft["gate_profile"]:
        body["gateProfile"] = draft["gate_profile"]
    return SpawnRequest.model_validate(body)


class SpawnScreen(ModalScreen[SpawnResponse | None]):
    DEFAULT_CSS = """
    SpawnScreen { align: center middle; background: $background 60%; }
    SpawnScreen #form {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    SpawnScreen .row { height: auto; margin-top: 1; }
    SpawnScreen .row Label { width: 14; padding: 0 1 0 0; text-align: right; }
    SpawnScreen .row Input, SpawnScreen .row Select { width: 1fr; }
    SpawnScreen TextArea { height: 3; width: 1fr; }
    SpawnScreen #form-error { color: $error; text-style: bold; height: auto; }
    SpawnScreen #buttons { height: auto; align-horizontal: right; margin-top: 1; }
    SpawnScreen Button { margin-left: 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Close (draft kept)"),
        Binding("ctrl+s", "submit", "Spawn"),
    ]

    def __init__(self, engine: EngineAPI, draft: dict[str, str] | None = None) -> None:
        """``draft`` is updated in place: what was typed survives closing the form."""
        super().__init__()
        self.engine = engine
        self.saved = draft if draft is not None else {}
        self.initial = {**DEFAULT_DRAFT, **self.saved}
        self.busy = False

    def compose(self) -> ComposeResult:
        d = self.initial
        with VerticalScroll(id="form") as form:
            form.border_title = "Spawn an agent (Ctrl+S spawns, Esc closes)"
            yield Static("", id="form-error")
            yield self._row(
                "Task id", Input(d["task_id"], placeholder="T-123", id="task_id", compact=True)
            )
            yield self._row(
                "Type",
                Select(
                    [(t.value, t.value) for t in AgentType],
                    value=d["agent_type"],
                    allow_blank=False,
                    id="agent_type",
                    compact=True,
                ),
            )
            yield self._row(
                "Gate profile",
                Select(
                    [(p.value, p.value) for p in GateProfile],
                    value=d["gate_profile"] or Select.NULL,
                    prompt="default for the type",
                    id="gate_profile",
                    compact=True,
                ),
            )
            yield self._row(
                "Priority", Input(d["priority"], placeholder="1-10", id="priority", compact=True)
            )
            yield self._row(
                "Repository",
                Input(
                    d["repository"],
                    placeholder="git URL or local path",
                    id="repository",
                    compact=True,
                ),
            )
            yield self._row(
                "Branch", Input(d["branch"], placeholder="main", id="branch", compact=True)
            )
            yield self._row(
                "Work items",
                Input(d["work_items"], placeholder="US-001, US-002", id="work_items", compact=True),
            )
            yield self._row(
                "Instructions", TextArea(d["instructions"], id="instructions", compact=True)
            )
            with Horizontal(id="buttons"):
                yield Button("Cancel (Esc)", id="cancel", compact=True)
                yield Button("Spawn (Ctrl+S)", id="spawn", variant="primary", compact=True)

    @staticmethod
    def _row(label: str, widget: Any) -> Horizontal:
        return Horizontal(Label(label), widget, classes="row")

    def on_mount(self) -> None:
        self.query_one("#task_id", Input).focus()

    def draft(self) -> dict[str, str]:
        values = {name: self.query_one(f"#{name}", Input).value for name in TEXT_FIELDS}
        values["agent_type"] = str(self.query_one("#agent_type", Select).value)
        profile = self.query_one("#gate_profile", Select).value
        values["gate_profile"] = "" if profile is Select.NULL else str(profile)
        values["instructions"] = self.query_one("#instructions", TextArea).text
        return values

    def show_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(message)

    def action_cancel(self) -> None:
        self.saved.update(self.draft())
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "spawn":
            self.action_submit()
        else:
            self.action_cancel()

    def action_submit(self) -> None:
        if self.busy:
            return
        try:
            request = build_request(self.draft())
        except ValidationError as exc:
            self.show_error(validation_message(exc))
            return
        self.busy = True
        self.show_error("")
        self.query_one("#spawn", Button).label = "Spawning…"
        self._spawn(request)

    @work(exclusive=True, group="spawn")
    async def _spawn(self, request: SpawnRequest) -> None:
        try:
            response = await self.engine.spawn(request)
        except OrchestratorError as exc:
            self.show_error(f"The orchestrator refused: {exc.message}")
        except Exception as exc:
            self.show_error(f"Spawn failed: {exc or type(exc).__name__}")
        else:
            self.saved.update(self.draft())
            for cleared in ("task_id", "work_items", "instructions"):
                self.saved[cleared] = ""
            self.dismiss(response)
            return
        finally:
            self.busy = False
        self.query_one("#spawn", Button).label = "Spawn (Ctrl+S)"
