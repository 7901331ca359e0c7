"""How values read on screen: status words with symbols and colours, ages, sizes, tokens.

Everything here is pure (no Textual), so the table, the detail view and the events pane agree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rich.text import Text

from core.models import AgentState, AgentStatus, Event, EventType

# A status reads without colour: a symbol and a word, then a colour on top.
STATUS_LOOK: dict[AgentStatus, tuple[str, str]] = {
    AgentStatus.SPAWNING: ("◌", "yellow"),
    AgentStatus.RUNNING: ("▶", "bold cyan"),
    AgentStatus.COMPLETED: ("✔", "green"),
    AgentStatus.FAILED: ("✖", "bold red"),
    AgentStatus.KILLED: ("■", "magenta"),
}

EVENT_STYLE: dict[str, str] = {
    "agent.completed": "green",
    "agent.failed": "bold red",
    "agent.killed": "magenta",
    "agent.running": "cyan",
    "gate.failed": "red",
    "gate.passed": "green",
    "git.pushed": "green",
    "git.conflict": "red",
    "secret.detected": "bold red",
    "killswitch.activated": "bold magenta",
    "queue.paused": "yellow",
    "queue.resumed": "yellow",
    "agent.activity": "blue",
    "model.rate_limited": "yellow",
}


class Clock:
    """The dashboard's notion of now, and how it prints wall times (a seam for frozen snapshots)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def hms(self, moment: datetime) -> str:
        return moment.astimezone().strftime("%H:%M:%S")


class FrozenClock(Clock):
    """A clock that never moves and prints no wall times: for deterministic screenshots."""

    def __init__(self, now: datetime | None = None) -> None:
        self._now = now or datetime(2000, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def hms(self, moment: datetime) -> str:
        return "--:--:--"


def status_text(status: AgentStatus) -> Text:
    symbol, style = STATUS_LOOK[status]
    return Text(f"{symbol} {status.value}", style=style)


def short_id(agent_id: str | None) -> str:
    return (agent_id or "-")[:8]


def duration(delta: timedelta | float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``; never negative."""
    if delta is None:
        return "-"
    seconds = int(max(0.0, delta.total_seconds() if isinstance(delta, timedelta) else delta))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def size(num_bytes: float | None) -> str:
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit in ("B", "K") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"  # pragma: no cover - loop always returns


def count(value: int) -> str:
    if value < 1000:
        return str(value)
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def tokens_cost(agent: AgentState) -> str:
    usage = agent.usage
    total = usage.input_tokens + usage.output_tokens
    if not total and not usage.cost_usd:
        return "-"
    return f"{count(total)} ${usage.cost_usd:.2f}"


def age(agent: AgentState, now: datetime) -> str:
    """Time since spawn while live; the run's length once final."""
    if agent.status.final and agent.completed_at is not None:
        return duration(agent.completed_at - (agent.started_at or agent.spawned_at))
    return duration(now - agent.spawned_at)


def one_line(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def event_text(event: Event, clock: Clock) -> Text:
    """One line of the events pane: time, type, task and agent, then the interesting data."""
    style = EVENT_STYLE.get(event.type.value, "")
    line = Text()
    line.append(clock.hms(event.timestamp), style="dim")
    line.append(" ")
    line.append(f"{event.type.value:<20}", style=style)
    if event.task_id:
        line.append(f" {event.task_id}", style="bold")
    if event.agent_id:
        line.append(f" ({short_id(event.agent_id)})", style="dim")
    detail = event_detail(event)
    if detail:
        line.append(f"  {detail}")
    return line


def activity_text(data: dict[str, Any] | None) -> str:
    """An ``agent.activity`` event as the operator reads it: ``tool: summary``."""
    data = data or {}
    tool = str(data.get("tool") or "?")
    summary = " ".join(str(data.get("summary") or "").split())
    return f"{tool}: {summary}" if summary else tool


def rate_limit_text(data: dict[str, Any] | None) -> str:
    """A ``model.rate_limited`` event: how long the agent waits."""
    wait = (data or {}).get("waitS")
    if isinstance(wait, int | float) and not isinstance(wait, bool):
        return f"rate-limited, waiting {duration(float(wait))}"
    return "rate-limited"


def event_detail(event: Event) -> str:
    data = event.data or {}
    if event.type is EventType.KILLSWITCH_ACTIVATED:
        return f"kill {data.get('scope', 'all')} by {data.get('by', '?')}"
    if event.type is EventType.AGENT_ACTIVITY:
        return one_line(activity_text(data), 120)
    if event.type is EventType.MODEL_RATE_LIMITED:
        return rate_limit_text(data)
    parts: list[str] = []
    for key in ("gate", "name", "reason", "error", "by", "branch", "commit", "message", "summary"):
        value = data.get(key)
        if value not in (None, "", [], {}):
            parts.append(f"{key}={one_line(str(value), 60)}")
    return " ".join(parts)
