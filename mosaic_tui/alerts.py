"""Which events deserve the operator's attention: failures, kills by others, rate limits, stuck.

``Alerts.check`` turns one event into an ``Alert`` (or None); the app shows it as a toast, rings
the terminal bell and, when enabled, sends a desktop notification escape. Events from before the
dashboard started (the replayed history) never alert, and neither does a kill this dashboard
asked for itself. Pure (no Textual).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from core.models import Event, EventType
from mosaic_tui.format import one_line, rate_limit_text, short_id

Severity = Literal["information", "warning", "error"]

STUCK_PREFIX = "stuck"
"""How the monitor words the failure of an agent with no output and no CPU (core/monitor.py)."""

KINDS: tuple[tuple[str, str], ...] = (
    ("failed", "an agent failed (its error)"),
    ("stuck", "an agent was stopped as stuck (no output, no CPU)"),
    ("killed", "an agent was killed by someone else (not by this dashboard)"),
    ("rate-limited", "the model gateway made an agent wait"),
)
"""What alerts, for the help screen."""


@dataclass(frozen=True)
class Alert:
    kind: str
    agent_id: str | None
    title: str
    message: str
    severity: Severity


class Alerts:
    def __init__(self, since: datetime | None = None) -> None:
        self.since = since or datetime.now(UTC)
        self._own_kills: set[str] = set()

    def own_kill(self, *agent_ids: str) -> None:
        """This dashboard is killing these agents: their ``agent.killed`` stays quiet."""
        self._own_kills.update(agent_ids)

    def check(self, event: Event) -> Alert | None:
        agent_id = event.agent_id
        if event.timestamp < self.since:
            return None
        data = event.data or {}
        if event.type is EventType.MODEL_RATE_LIMITED and agent_id is None:
            # the gateway holds every agent's requests: one event per episode, naming none
            text = rate_limit_text(data).replace("waiting", "every agent waits")
            return Alert("rate-limited", None, "Model rate-limited", text, "warning")
        if agent_id is None:
            return None
        who = f"Agent {short_id(agent_id)}" + (f" ({event.task_id})" if event.task_id else "")
        if event.type is EventType.AGENT_FAILED:
            error = one_line(str(data.get("error") or "no reason given"), 160)
            if error.lower().startswith(STUCK_PREFIX):
                return Alert("stuck", agent_id, f"{who} is stuck", error, "error")
            return Alert("failed", agent_id, f"{who} failed", error, "error")
        if event.type is EventType.AGENT_KILLED:
            if agent_id in self._own_kills:
                self._own_kills.discard(agent_id)
                return None
            by = str(data.get("by") or "someone else")
            return Alert("killed", agent_id, f"{who} was killed", f"killed by {by}", "warning")
        if event.type is EventType.MODEL_RATE_LIMITED:
            text = rate_limit_text(data)
            return Alert("rate-limited", agent_id, f"{who} is rate-limited", text, "warning")
        return None


def desktop_escape(alert: Alert) -> str:
    """The alert as a desktop notification for terminals that show them: OSC 777 (notify),
    then OSC 9 (iTerm2, Windows Terminal, kitty...). Control characters are removed."""

    def clean(text: str) -> str:
        return "".join(ch for ch in text if ch.isprintable()).replace(";", ",")

    title, body = clean(alert.title), clean(alert.message)
    return f"\x1b]777;notify;{title};{body}\x07\x1b]9;{title}: {body}\x07"
