"""What crosses the gates seam: results, the run context and the protocols of its collaborators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, computed_field

from core.errors import ConfigError

Phase = Literal["pre", "post"]

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``emit(event_type, data)`` with ``gate.started``, ``gate.passed`` or ``gate.failed``."""

AiReview = Callable[[str], Awaitable[tuple[bool, str]]]
"""Diff text -> ``(approved, comments)``."""


class GateConfigError(ConfigError):
    """Invalid gate config: ``config/gates.toml`` or a repository's ``.mosaic/gates.toml``."""

    code = "invalid_gate_config"


class GateStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"


class GateResult(BaseModel):
    """One gate's outcome, as stored in ``AgentResult.gates`` and shown to the user.

    ``reason`` says why a gate was skipped, failed or errored (and, for coverage, the measured
    percentage). ``passed`` is true only for status ``passed``; a ``skipped`` gate neither passed
    nor blocks.
    """

    name: str
    status: GateStatus
    duration_s: float
    output_tail: str = ""
    reason: str | None = None
    phase: Phase | None = None
    command: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.status is GateStatus.PASSED

    @property
    def blocking(self) -> bool:
        return self.status in (GateStatus.FAILED, GateStatus.ERROR)


@dataclass
class CommandResult:
    exit_code: int
    output: str
    """stdout and stderr interleaved (possibly only the tail of a long output)."""
    timed_out: bool
    duration_s: float


class CommandExecutor(Protocol):
    async def __call__(self, command: str, *, cwd: Path, timeout_s: float) -> CommandResult:
        """Run ``sh -c command`` in ``cwd``.

        On timeout the command's whole process tree is killed (nothing is left running) and the
        result has ``timed_out=True``. Cancelling the call kills the tree too.
        """
        ...


@dataclass
class GateContext:
    agent_id: str
    task_id: str
    agent_type: str
    profile: str
    """strict | standard | minimal | custom; empty means the agent type's default."""
    worktree: Path
    executor: CommandExecutor
    emit: Emit
    custom_gates: list[str] | None = None
    commit: str | None = None
    base_sha: str | None = None
    """The commit the agent started from. When set, the repository's ``.mosaic/gates.toml`` is
    read from this commit, so an agent cannot weaken its own gates by editing the file."""
    ai_review: AiReview | None = None
    gate_timeout_s: float = 600.0


class GateRunner(Protocol):
    async def run(self, ctx: GateContext, phase: Phase) -> list[GateResult]:
        """Run every gate of ``ctx``'s profile that belongs to ``phase``; report all of them.

        Never raises for a gate's failure: problems become ``failed``/``error`` results. The caller
        decides with ``any(r.blocking for r in results)``.
        """
        ...
