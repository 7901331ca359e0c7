"""The dashboard's picture of the agents: latest states, CPU samples, filter and sort order.

Pure data (no Textual): the table widget renders what the book says, so sorting, filtering and
row contents are tested without a screen. The shown order is kept incrementally (``SortedRows``):
an update moves only the agent it is about, and the book remembers which agents changed so the
table repaints only their rows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.text import Text

from core.models import AgentState, AgentStatus, Event, EventType
from mosaic_tui.format import (
    activity_text,
    age,
    one_line,
    short_id,
    size,
    status_text,
    tokens_cost,
)
from mosaic_tui.rows import SortedRows


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int | None
    sort_key: Callable[[AgentState, AgentBook], Any]


STATUS_ORDER = {
    AgentStatus.RUNNING: 0,
    AgentStatus.SPAWNING: 1,
    AgentStatus.FAILED: 2,
    AgentStatus.KILLED: 3,
    AgentStatus.COMPLETED: 4,
}

COLUMNS: tuple[Column, ...] = (
    Column("id", "ID", 8, lambda a, b: a.agent_id),
    Column("task", "Task", 16, lambda a, b: a.task_id.lower()),
    Column("status", "Status", 11, lambda a, b: (STATUS_ORDER[a.status], a.spawned_at)),
    Column("type", "Type", 8, lambda a, b: a.agent_type.value),
    Column("age", "Age", 6, lambda a, b: a.spawned_at),
    Column("cpu", "CPU", 5, lambda a, b: b.cpu_percent(a.agent_id) or -1.0),
    Column("mem", "Mem", 6, lambda a, b: (a.resources or {}).get("memory_bytes", -1.0)),
    Column(
        "tokens",
        "Tokens/$",
        12,
        lambda a, b: (a.usage.cost_usd, a.usage.input_tokens + a.usage.output_tokens),
    ),
    Column("activity", "Last activity", 48, lambda a, b: b.activity.get(a.agent_id, "")),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
# Age sorts newest first; every other column reads best ascending.
DEFAULT_DESCENDING = {"age"}


COLUMN_BY_KEY = {c.key: c for c in COLUMNS}

Cell = tuple[str, str, bool]
"""One cell as the table draws it: text, Rich style, right-justified."""


class AgentBook:
    def __init__(self) -> None:
        self.agents: dict[str, AgentState] = {}
        self.activity: dict[str, str] = {}
        self.tails: dict[str, deque[str]] = {}
        self.rows = SortedRows()
        self.changed: set[str] = set()
        """Agents whose row may read differently since the table last looked (``take_changed``)."""
        self._filter_text = ""
        self._terms: list[str] = []
        self._sort_column = "age"
        self._descending = True
        self._cpu_prev: dict[str, tuple[float, float]] = {}
        self._cpu_pct: dict[str, float] = {}

    # -- sort and filter (a change rebuilds the order once) ------------------------------------
    @property
    def filter_text(self) -> str:
        return self._filter_text

    @filter_text.setter
    def filter_text(self, text: str) -> None:
        if text != self._filter_text:
            self._filter_text = text
            self._terms = text.lower().split()
            self._rebuild()

    @property
    def sort_column(self) -> str:
        return self._sort_column

    @sort_column.setter
    def sort_column(self, key: str) -> None:
        if key not in COLUMN_BY_KEY:
            raise ValueError(f"no column {key!r}")
        if key != self._sort_column:
            self._sort_column = key
            self._rebuild()

    @property
    def descending(self) -> bool:
        return self._descending

    @descending.setter
    def descending(self, value: bool) -> None:
        if value != self._descending:
            self._descending = value
            self.rows.version += 1  # the same list, read from the other end

    def _sort_value(self, agent: AgentState) -> Any:
        return COLUMN_BY_KEY[self._sort_column].sort_key(agent, self)

    def _rebuild(self) -> None:
        self.rows.rebuild(
            (a.agent_id, self._sort_value(a)) for a in self.agents.values() if self.matches(a)
        )

    def _place(self, agent_id: str) -> None:
        """Re-rank one agent after a change (O(log n)); remember to repaint its row."""
        agent = self.agents.get(agent_id)
        if agent is None or not self.matches(agent):
            self.rows.remove(agent_id)
        else:
            self.rows.place(agent_id, self._sort_value(agent))
        self.changed.add(agent_id)

    def take_changed(self) -> set[str]:
        changed, self.changed = self.changed, set()
        return changed

    # -- updates ---------------------------------------------------------------------------
    def upsert(self, agent: AgentState) -> bool:
        """Record a fresh state; answers whether anything shown may have changed."""
        old = self.agents.get(agent.agent_id)
        if old is not None and old.version > agent.version:
            return False  # an older read raced a newer one
        self._sample_cpu(agent)
        if agent.last_output:
            tail = self.tails.setdefault(agent.agent_id, deque(maxlen=200))
            if not tail or tail[-1] != agent.last_output:
                tail.append(agent.last_output)
                self.activity[agent.agent_id] = one_line(agent.last_output, 200)
        elif agent.error and agent.status.final:
            self.activity[agent.agent_id] = one_line(agent.error, 200)
        self.agents[agent.agent_id] = agent
        fresh = old is None or old != agent
        if fresh:
            self._place(agent.agent_id)
        return fresh

    def replace_all(self, agents: Iterable[AgentState]) -> None:
        fresh = {a.agent_id: a for a in agents}
        for gone in set(self.agents) - set(fresh):
            self.forget(gone)
        for agent in fresh.values():
            self.upsert(agent)

    def forget(self, agent_id: str) -> None:
        self.rows.remove(agent_id)
        self.changed.discard(agent_id)
        self.agents.pop(agent_id, None)
        self.activity.pop(agent_id, None)
        self.tails.pop(agent_id, None)
        self._cpu_prev.pop(agent_id, None)
        self._cpu_pct.pop(agent_id, None)

    def apply_event(self, event: Event) -> bool:
        """Fold an event into the book at once (status, activity); the full state follows later.

        Answers whether the agent is unknown or its state is worth re-reading (lifecycle events).
        """
        if not event.agent_id:
            return False
        if event.type is EventType.AGENT_ACTIVITY:
            self.activity[event.agent_id] = one_line(activity_text(event.data), 200)
        elif event.type is not EventType.TASK_QUEUED:
            self.activity[event.agent_id] = one_line(
                f"{event.type.value} {_event_hint(event)}".strip(), 200
            )
        agent = self.agents.get(event.agent_id)
        if agent is None:
            return True
        status = (event.data or {}).get("status")
        if event.type.value.startswith("agent.") and status in AgentStatus._value2member_map_:
            new = AgentStatus(str(status))
            if new != agent.status and not agent.status.final:
                changes: dict[str, Any] = {"status": new}
                if new is AgentStatus.RUNNING:
                    changes["started_at"] = event.timestamp
                if new.final:
                    changes["completed_at"] = event.timestamp
                self.agents[agent.agent_id] = agent.model_copy(update=changes)
        self._place(agent.agent_id)
        return event.type.value.startswith("agent.") and event.type is not EventType.AGENT_ACTIVITY

    def _sample_cpu(self, agent: AgentState) -> None:
        res = agent.resources or {}
        cpu, runtime = res.get("cpu_seconds"), res.get("runtime_s")
        if cpu is None or runtime is None:
            return
        prev = self._cpu_prev.get(agent.agent_id)
        if prev is not None and runtime > prev[1]:
            self._cpu_pct[agent.agent_id] = max(0.0, (cpu - prev[0]) / (runtime - prev[1]) * 100)
        elif prev is None and runtime > 0:
            self._cpu_pct[agent.agent_id] = max(0.0, cpu / runtime * 100)
        self._cpu_prev[agent.agent_id] = (cpu, runtime)

    def cpu_percent(self, agent_id: str) -> float | None:
        agent = self.agents.get(agent_id)
        if agent is None or agent.status.final:
            return None
        return self._cpu_pct.get(agent_id)

    # -- view --------------------------------------------------------------------------------
    def matches(self, agent: AgentState) -> bool:
        terms = self._terms
        if not terms:
            return True
        hay = " ".join(
            (agent.agent_id, agent.task_id, agent.agent_type.value, agent.status.value)
        ).lower()
        return all(term in hay for term in terms)

    def visible(self) -> list[AgentState]:
        """The shown agents, in the shown order (ties read by id, reversed when descending)."""
        return [self.agents[i] for i in self.rows.ids(descending=self._descending)]

    def shown_at(self, index: int) -> str:
        return self.rows.at(index, descending=self._descending)

    def index_of(self, agent_id: str) -> int | None:
        return self.rows.index(agent_id, descending=self._descending)

    def cycle_sort(self) -> str:
        index = (COLUMN_KEYS.index(self.sort_column) + 1) % len(COLUMN_KEYS)
        self.sort_column = COLUMN_KEYS[index]
        self.descending = self.sort_column in DEFAULT_DESCENDING
        return self.sort_column

    def reverse_sort(self) -> None:
        self.descending = not self.descending

    def row(self, agent: AgentState, now: datetime) -> tuple[Cell, ...]:
        """The row's cells, in ``COLUMNS`` order."""
        cpu = self.cpu_percent(agent.agent_id)
        mem = (agent.resources or {}).get("memory_bytes") if not agent.status.final else None
        status: Text = status_text(agent.status)
        return (
            (short_id(agent.agent_id), "dim", False),
            (agent.task_id, "bold", False),
            (status.plain, str(status.style), False),
            (agent.agent_type.value, "", False),
            (age(agent, now), "", False),
            ("-" if cpu is None else f"{cpu:.0f}%", "", True),
            (size(mem) if mem is not None else "-", "", True),
            (tokens_cost(agent), "", True),
            (one_line(self.activity.get(agent.agent_id), 200), "dim", False),
        )

    def counts(self) -> dict[AgentStatus, int]:
        tally = dict.fromkeys(AgentStatus, 0)
        for agent in self.agents.values():
            tally[agent.status] += 1
        return tally

    def live_count(self) -> int:
        return sum(1 for a in self.agents.values() if not a.status.final)


def _event_hint(event: Event) -> str:
    data = event.data or {}
    for key in ("gate", "name", "error", "reason", "branch", "by"):
        if data.get(key):
            return str(data[key])
    return ""
