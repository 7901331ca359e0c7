"""What crosses the gates seam: results, the run context and the protocols of its collaborators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, computed_field

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
    percentage); it also carries the ``notes``. ``passed`` is true only for status ``passed``.

    ``required``: the gate must actually run (SPEC §17, gate integrity): a worker's gate that its
    profile requires and the base commit's ``.mosaic/gates.toml`` does not disable. A ``skipped``
    gate blocks when it is required; otherwise (reviewers, testers, disabled gates) it neither
    passed nor blocks.

    ``notes``: what the user should know although it does not decide the outcome, e.g. that the
    agent changed a file the gate command runs (``ci/test.sh``) and the gate ran its base version.
    """

    name: str
    status: GateStatus
    duration_s: float
    output_tail: str = ""
    reason: str | None = None
    phase: Phase | None = None
    command: str | None = None
    required: bool = False
    notes: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return self.status is GateStatus.PASSED

    @property
    def blocking(self) -> bool:
        if self.status is GateStatus.SKIPPED:
            return self.required
        return self.status in (GateStatus.FAILED, GateStatus.ERROR)


@dataclass
class CommandResult:
    exit_code: int
    output: str
    """stdout and stderr interleaved (possibly only the tail of a long output)."""
    timed_out: bool
    duration_s: float


Overlay = tuple[Path, Path]
"""``(host file, path inside the worktree)``: the command sees the host file, read-only, at that
path (a gate script's base version over the agent's copy)."""


class OverlayUnsupported(Exception):
    """The executor cannot show a file's base version to the command (no sandbox to bind it)."""


class CommandExecutor(Protocol):
    async def __call__(
        self, command: str, *, cwd: Path, timeout_s: float, overlays: Sequence[Overlay] = ()
    ) -> CommandResult:
        """Run ``sh -c command`` in ``cwd``.

        On timeout the command's whole process tree is killed (nothing is left running) and the
        result has ``timed_out=True``. Cancelling the call kills the tree too. ``overlays`` are
        bound read-only over their worktree paths for this command only; an executor that
        cannot do that raises :class:`OverlayUnsupported` rather than run without them. Callers
        pass ``overlays`` only when there are some.
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
    """The commit the agent started from. When set, the gates are defined by this commit: the
    repository's ``.mosaic/gates.toml`` and the build files detection reads come from it, and
    the files a gate command runs are used at their version in it, so an agent cannot weaken its
    own gates by editing them (SPEC §17)."""
    ai_review: AiReview | None = None
    gate_timeout_s: float = 600.0


class GateRunner(Protocol):
    async def run(self, ctx: GateContext, phase: Phase) -> list[GateResult]:
        """Run every gate of ``ctx``'s profile that belongs to ``phase``; report all of them.

        Never raises for a gate's failure: problems become ``failed``/``error`` results. The caller
        decides with ``any(r.blocking for r in results)``.
        """
        ...
