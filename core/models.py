"""Pydantic models at the boundaries: the spawn request, TaskState, AgentState, events."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema


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

# The wire's patterns: each is checked with ``re.fullmatch`` and published as is in the OpenAPI
# document, so they keep to what Python ``re`` and ECMA-262 (JSON Schema) read alike: explicit
# character classes, ``[\s\S]`` for "anything", no ``.``, no ``\d``/``\w``/``\s`` on their own.
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
AGENT_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""Agent ids are lowercase UUIDs (``new_agent_id``)."""
ITEM_PATTERN = r"^[^\n\r\x00]+$"
BRANCH_PATTERN = (
    r"^(?!-)(?!HEAD$)(?!@$)(?!\.)(?!/)"
    r"(?![\s\S]*\.\.)(?![\s\S]*@\{)(?![\s\S]*//)(?![\s\S]*/\.)(?![\s\S]*\.lock/)"
    r"(?![\s\S]*\.lock$)(?![\s\S]*/$)(?![\s\S]*\.$)"
    r"[^\x00-\x20\x7f~^:?*\[\\]{1,255}$"
)
"""``git check-ref-format --branch`` as one pattern (``core.git.validation.validate_branch``)."""

_PCHAR = r"[A-Za-z0-9._~!$&'()*+,;=:@%-]"
_USER_CHAR = r"[A-Za-z0-9._~!$&'()*+,;=-]"
_USER = rf"[A-Za-z0-9._~!$&'()*+,;=]{_USER_CHAR}*"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_URL_PATH = rf"(?:/{_PCHAR}+)+/?"
_NOT_SPACE_END = r"[^\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
REPOSITORY_PATTERN = (
    "^(?:"
    # http(s) URLs; only these may carry user:token (taken out before anything is stored)
    rf"https?://(?:{_USER}(?::{_USER_CHAR}*)?@)?{_HOST}(?::{_PORT})?{_URL_PATH}"
    rf"|(?:ssh|git|git\+ssh|ssh\+git)://(?:{_USER}@)?{_HOST}(?::{_PORT})?{_URL_PATH}"
    rf"|file://(?:localhost)?/(?:{_PCHAR}|/)*"
    # scp-like user@host:path
    rf"|(?:[A-Za-z0-9._~+][A-Za-z0-9._~+-]*@)?{_HOST}:/?[A-Za-z0-9._~!$&'()*+,;=@%](?:{_PCHAR}|/)*"
    # an absolute local path (it must be a git repository: else 404)
    rf"|/(?:[^\x00-\x1f\x7f]*{_NOT_SPACE_END})?"
    ")$"
)
"""The repository forms ``core.git.validation.validate_repository`` accepts, narrowed to one
syntax: lowercase schemes, host names (no IPv6 literals), no query or fragment, no ``%`` in
user names. Whatever matches passes that validation, but for a local path that is not a git
repository."""

GATE_NAMES = ("typecheck", "lint", "tests", "coverage", "build", "integration", "ai_review")
"""The gates ``config/gates.toml`` defines (a test keeps the two equal)."""
GATE_NAME_SPELLINGS = (*GATE_NAMES, *(n.replace("_", "-") for n in GATE_NAMES if "_" in n))


def _matching(pattern: str, message: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if compiled.fullmatch(value) is None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


def _one_of(values: tuple[str, ...], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"{what} must be one of {', '.join(values)}")
        return value

    return AfterValidator(check)


TaskId = Annotated[
    str,
    Field(json_schema_extra={"pattern": TASK_ID_PATTERN}),
    _matching(
        TASK_ID_PATTERN,
        "taskId must be 1-128 characters of letters, digits, '.', '_' or '-', "
        "starting with a letter or digit",
    ),
]
Item = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": ITEM_PATTERN}),
    _matching(ITEM_PATTERN, "items must be non-empty single-line strings of at most 200 chars"),
]
GateName = Annotated[
    str,
    Field(json_schema_extra={"enum": list(GATE_NAME_SPELLINGS)}),
    _one_of(GATE_NAME_SPELLINGS, "a gate"),
]


def _strip_python_input(value: Any, info: ValidationInfo) -> Any:
    """Python callers (the dashboard's form) get surrounding whitespace stripped; JSON, the wire,
    is taken exactly as sent, so that the OpenAPI document's patterns are the whole truth."""
    if info.mode == "python":
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, list):
            return [v.strip() if isinstance(v, str) else v for v in value]
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SpawnContext(_Strict):
    repository: Annotated[
        str,
        Field(min_length=1, max_length=2048, json_schema_extra={"pattern": REPOSITORY_PATTERN}),
        _matching(
            REPOSITORY_PATTERN,
            "repository must be an http(s), ssh, git or file URL, user@host:path, "
            "or the absolute path of a local git repository",
        ),
    ]
    branch: Annotated[
        str,
        Field(json_schema_extra={"pattern": BRANCH_PATTERN}),
        _matching(BRANCH_PATTERN, "branch must be a valid git branch name"),
    ] = "main"
    work_items: list[Item] = Field(default_factory=list, alias="workItems", max_length=100)
    skills: list[Item] = Field(default_factory=list, max_length=50)
    instructions: str | None = Field(default=None, max_length=100_000)
    gates: list[GateName] | None = Field(default=None, max_length=20)

    _strip = field_validator("repository", "branch", "work_items", "skills", mode="before")(
        _strip_python_input
    )


RUNTIME_NAMES = ("builtin", "claude-code", "command")
RuntimeName = Literal["builtin", "claude-code", "command"]
"""How an agent's session runs (SPEC §15): the SDK agent loop, the Claude Code CLI, or
``MOSAIC_AGENT_COMMAND``."""


class SpawnRequest(_Strict):
    """Body of ``POST /agents/spawn``.

    The API validates it with :meth:`from_wire`: strictly (no type coercion), by its camelCase
    names only, exactly as the OpenAPI document describes it.
    """

    task_id: TaskId = Field(alias="taskId")
    agent_type: AgentType = Field(alias="agentType")
    gate_profile: GateProfile | None = Field(default=None, alias="gateProfile")
    priority: int = Field(default=5, ge=1, le=10)
    runtime: RuntimeName | None = None
    """The runtime for this task; default: ``MOSAIC_RUNTIME``."""
    context: SpawnContext

    _strip = field_validator("task_id", mode="before")(_strip_python_input)

    @field_validator("priority", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        # JSON Schema's "integer" holds 3.0; strict validation would refuse it
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @classmethod
    def from_wire(cls, raw: str | bytes) -> SpawnRequest:
        return cls.model_validate_json(raw, strict=True, by_alias=True, by_name=False)

    @property
    def effective_profile(self) -> GateProfile:
        return self.gate_profile or DEFAULT_PROFILE[self.agent_type]


class Usage(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    turns: int = 0


class AgentResult(BaseModel):
    """What an agent's run produced; filled in by the finish stage."""

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)

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
    base_sha: str | None = None
    """The commit the agent's worktree started from (its diff's base)."""
    usage: Usage = Field(default_factory=Usage)
    result: AgentResult | None = None
    attempts: int = 0
    last_output: str | None = None
    resources: dict[str, float] | None = None
    runtime: str | None = None
    session_id: str | None = None
    """The runtime's session (claude-code): a retry of the task resumes it."""
    net: dict[str, int] | None = None
    """Connections the egress proxy allowed and denied (``{allowed, denied}``)."""
    fence: int = 0
    """The fencing token of the agent's current attempt (``core/run/fence.py``)."""
    version: int = 0


def _none(value: Any) -> bool:
    return value is None


class AgentView(BaseModel):
    """An agent's status as a client sees it: the one wire model of the answers of
    ``GET /agents/{agentId}/status``, ``GET /agents`` and ``POST /agents/{agentId}/kill``, used by
    the API, its OpenAPI document and the attach-mode client (``mosaic_tui.remote``). Unknown
    optional fields are left out, not null.
    """

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    agent_id: str = Field(alias="agentId")
    task_id: str = Field(alias="taskId")
    status: AgentStatus
    spawned_at: datetime = Field(alias="spawnedAt")
    agent_type: AgentType = Field(alias="agentType")
    gate_profile: GateProfile = Field(alias="gateProfile")
    attempts: int = Field(ge=0)
    usage: Usage
    started_at: datetime | SkipJsonSchema[None] = Field(None, alias="startedAt", exclude_if=_none)
    completed_at: datetime | SkipJsonSchema[None] = Field(
        None, alias="completedAt", exclude_if=_none
    )
    error: str | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    summary: str | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    branch: str | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    worktree: str | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    instance: str | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    last_output: str | SkipJsonSchema[None] = Field(None, alias="lastOutput", exclude_if=_none)
    resources: dict[str, float] | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    result: AgentResult | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    runtime: str | SkipJsonSchema[None] = Field(None, exclude_if=_none)
    session_id: str | SkipJsonSchema[None] = Field(None, alias="sessionId", exclude_if=_none)
    net: dict[str, int] | SkipJsonSchema[None] = Field(None, exclude_if=_none)

    @classmethod
    def of(cls, agent: AgentState) -> AgentView:
        return cls(
            agent_id=agent.agent_id,
            task_id=agent.task_id,
            status=agent.status,
            spawned_at=agent.spawned_at,
            agent_type=agent.agent_type,
            gate_profile=agent.gate_profile,
            attempts=agent.attempts,
            usage=agent.usage,
            started_at=agent.started_at,
            completed_at=agent.completed_at,
            error=agent.error,
            summary=agent.summary,
            branch=agent.branch,
            worktree=agent.worktree,
            instance=agent.instance,
            last_output=agent.last_output,
            resources=agent.resources,
            result=agent.result,
            runtime=agent.runtime,
            session_id=agent.session_id,
            net=agent.net,
        )

    def state(self) -> AgentState:
        """The agent as the engine's interface gives it (what the wire leaves out at defaults)."""
        return AgentState(
            agent_id=self.agent_id,
            task_id=self.task_id,
            agent_type=self.agent_type,
            gate_profile=self.gate_profile,
            status=self.status,
            spawned_at=self.spawned_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            error=self.error,
            summary=self.summary,
            instance=self.instance,
            worktree=self.worktree,
            branch=self.branch,
            usage=self.usage,
            result=self.result,
            attempts=self.attempts,
            last_output=self.last_output,
            resources=self.resources,
            runtime=self.runtime,
            session_id=self.session_id,
            net=self.net,
        )


class AgentList(BaseModel):
    """``GET /agents``."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    agents: list[AgentView]
    total: int = Field(ge=0)


class SpawnResponse(BaseModel):
    """``POST /agents/spawn`` (202); ``existing``: the task's live agent, spawned before."""

    model_config = ConfigDict(serialize_by_alias=True)

    agent_id: str = Field(
        validation_alias=AliasChoices("agentId", "agent_id"), serialization_alias="agentId"
    )
    status: AgentStatus
    existing: bool = Field(False, exclude_if=lambda existing: not existing)


class KillAllResult(BaseModel):
    """``POST /agents/kill-all``."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    message: str
    total: int = Field(ge=0)
    killed: int = Field(ge=0)
    failed: int = Field(ge=0)
    errors: list[dict[str, str]] = Field(default_factory=list)
    """``{agentId, error}`` of each agent that could not be killed."""


class QueueStats(BaseModel):
    """``GET /queue/stats``."""

    model_config = ConfigDict(
        json_schema_serialization_defaults_required=True,
        populate_by_name=True,
        serialize_by_alias=True,
    )

    waiting: int = 0
    prioritized: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    paused: bool = False
    workers: int = 0
    concurrency: int = 1
    max_concurrent_agents: int = 2
    live_agents: int = 0
    rate_limited_until: datetime | SkipJsonSchema[None] = Field(
        None, alias="rateLimitedUntil", exclude_if=_none
    )
    """While the model's rate limit holds every agent's requests: when it ends (SPEC §15)."""


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["ok"] = "ok"
    uptime: float = Field(ge=0)

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class ReadinessCheck(BaseModel):
    """One dependency's state; each check adds its own fields (endpoint, backend, error...)."""

    model_config = ConfigDict(extra="allow")

    ok: bool


class Readiness(BaseModel):
    """``GET /health/ready``: 200 when every check is ok, else 503."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: Literal["ready", "not_ready"]
    checks: dict[str, ReadinessCheck]


class QueueState(BaseModel):
    """``POST /queue/pause`` and ``/queue/resume``."""

    paused: bool


class ErrorDetail(BaseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """Every error answer: ``{error: {code, message, details}}``."""

    error: ErrorDetail


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
    AGENT_ACTIVITY = "agent.activity"
    """A tool call of a running agent: data ``{tool, summary}`` (SPEC §20)."""
    MODEL_RATE_LIMITED = "model.rate_limited"
    """The model gateway made an agent wait: data ``{untilTs, waitS}`` (SPEC §20)."""
    NET_ALLOWED = "net.allowed"
    NET_DENIED = "net.denied"


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

    model_config = ConfigDict(
        populate_by_name=True, json_schema_serialization_defaults_required=True
    )

    @classmethod
    def from_wire(cls, raw: str | bytes) -> Event:
        return cls.model_validate_json(raw)

    def wire(self) -> str:
        return self.model_dump_json(by_alias=True)


def new_agent_id() -> str:
    return str(uuid.uuid4())
