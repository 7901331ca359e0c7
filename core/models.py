"""Pydantic models at the boundaries: the spawn request, TaskState, AgentState, events."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


class AgentType(StrEnum):
    WORKER = "worker"
    REVIEWER = "reviewer"
    TESTER = "tester"


class GateProfile(StrEnum):
    STRICT = "strict"
    STANDARD = "standard"
    MINIMAL = "minimal"
    CUSTOM = "custom"


DEFAULT_PROFILE: dict[AgentType, GateProfile] = {
    AgentType.WORKER: GateProfile.STANDARD,
    AgentType.REVIEWER: GateProfile.STRICT,
    AgentType.TESTER: GateProfile.MINIMAL,
}


class AgentStatus(StrEnum):
    SPAWNING = "spawning"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.KILLED})
LIVE_STATUSES = frozenset({AgentStatus.SPAWNING, AgentStatus.RUNNING})

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


class SpawnContext(_Strict):
    repository: str = Field(min_length=1, max_length=2048)
    branch: str = Field(default="main", min_length=1, max_length=255)
    work_items: list[str] = Field(default_factory=list, alias="workItems", max_length=100)
    skills: list[str] = Field(default_factory=list, max_length=50)
    instructions: str | None = Field(default=None, max_length=100_000)
    gates: list[str] | None = Field(default=None, max_length=20)

    @field_validator("work_items", "skills")
    @classmethod
    def _short_items(cls, items: list[str]) -> list[str]:
        for item in items:
            if not item or len(item) > 200 or any(c in item for c in "\n\r\0"):
                raise ValueError("items must be non-empty single-line strings of at most 200 chars")
        return items


class SpawnRequest(_Strict):
    """Body of ``POST /agents/spawn``."""

    task_id: str = Field(alias="taskId")
    agent_type: AgentType = Field(alias="agentType")
    gate_profile: GateProfile | None = Field(default=None, alias="gateProfile")
    priority: int = Field(default=5, ge=1, le=10)
    context: SpawnContext

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, value: str) -> str:
        if not _TASK_ID.match(value):
            raise ValueError(
                "taskId must be 1-128 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @property
    def effective_profile(self) -> GateProfile:
        return self.gate_profile or DEFAULT_PROFILE[self.agent_type]


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    turns: int = 0


class AgentResult(BaseModel):
    """What an agent's run produced; filled in by the finish stage."""

    model_config = ConfigDict(extra="allow")

    exit_code: int | None = None
    commit: str | None = None
    branch: str | None = None
    pushed: bool = False
    gates: list[dict[str, Any]] = Field(default_factory=list)
    scan: dict[str, Any] | None = None
    conflicts: list[str] | None = None
    verdict: dict[str, Any] | None = None
    usage: Usage | None = None


class AgentState(BaseModel):
    """Stored at ``orchestrator:agent:{agentId}``."""

    agent_id: str
    task_id: str
    agent_type: AgentType
    gate_profile: GateProfile
    status: AgentStatus = AgentStatus.SPAWNING
    spawned_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    summary: str | None = None
    instance: str | None = None
    pid: int | None = None
    sandbox: dict[str, Any] | None = None
    worktree: str | None = None
    branch: str | None = None
    usage: Usage = Field(default_factory=Usage)
    result: AgentResult | None = None
    attempts: int = 0
    last_output: str | None = None
    resources: dict[str, float] | None = None
    version: int = 0


class TaskState(BaseModel):
    """Stored at ``orchestrator:task:{taskId}``."""

    task_id: str
    agent_id: str
    status: AgentStatus = AgentStatus.SPAWNING
    request: SpawnRequest
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    result: AgentResult | None = None


class EventType(StrEnum):
    AGENT_SPAWNING = "agent.spawning"
    AGENT_RUNNING = "agent.running"
    AGENT_COMPLETED = "agent.completed"
    AGENT_FAILED = "agent.failed"
    AGENT_KILLED = "agent.killed"
    TASK_QUEUED = "task.queued"
    TASK_STARTED = "task.started"
    TASK_RETRYING = "task.retrying"
    GATE_STARTED = "gate.started"
    GATE_PASSED = "gate.passed"
    GATE_FAILED = "gate.failed"
    GIT_COMMITTED = "git.committed"
    GIT_PUSHED = "git.pushed"
    GIT_CONFLICT = "git.conflict"
    SECRET_DETECTED = "secret.detected"
    QUEUE_PAUSED = "queue.paused"
    QUEUE_RESUMED = "queue.resumed"
    KILLSWITCH_ACTIVATED = "killswitch.activated"
    REVIEW_VERDICT = "review.verdict"


STATUS_EVENT: dict[AgentStatus, EventType] = {
    AgentStatus.SPAWNING: EventType.AGENT_SPAWNING,
    AgentStatus.RUNNING: EventType.AGENT_RUNNING,
    AgentStatus.COMPLETED: EventType.AGENT_COMPLETED,
    AgentStatus.FAILED: EventType.AGENT_FAILED,
    AgentStatus.KILLED: EventType.AGENT_KILLED,
}


class Event(BaseModel):
    """One lifecycle or task event. ``id`` is the event stream's entry id."""

    id: str = ""
    type: EventType
    agent_id: str | None = Field(default=None, alias="agentId")
    task_id: str | None = Field(default=None, alias="taskId")
    timestamp: datetime = Field(default_factory=utcnow)
    data: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def from_wire(cls, raw: str | bytes) -> Event:
        return cls.model_validate_json(raw)

    def wire(self) -> str:
        return self.model_dump_json(by_alias=True)


def new_agent_id() -> str:
    return str(uuid.uuid4())
