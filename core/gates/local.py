"""``LocalGateRunner``: the orchestrator runs the gates itself, through ``ctx.executor``.

For each gate of the phase, in order: the command from the repository's ``.mosaic/gates.toml``,
else the command detected from its build files (``core/gates/detect.py``); nothing to run ->
``skipped`` with the reason. Both come from the base commit (``ctx.base_sha``; the worktree only
when no base is given), so an agent cannot weaken its gates by editing or deleting what defines
them. The commands run in the agent's worktree (they test its change), except that the files a
command runs (``sh ci/test.sh``: ``core/gates/command_files.py``) are shown at their base version
when the agent changed them (``core/gates/pinning.py``), which the result's ``notes`` report. Each
command runs with the per-gate timeout (the repository's ``timeout_s``, else
``ctx.gate_timeout_s``); a timed-out gate fails and its process tree is killed by the executor.
Every gate of the phase runs, whatever the earlier ones gave; a required gate that is skipped
blocks a worker (``core/gates/required.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from core.errors import ValidationFailed
from core.gates import ai_review
from core.gates.command_files import files_run_by
from core.gates.coverage import parse_coverage
from core.gates.detect import (
    PROBE_COMMAND,
    GatePlan,
    ProjectFacts,
    parse_probe,
    plan_detected,
    scan_project,
)
from core.gates.models import (
    CommandResult,
    GateConfigError,
    GateContext,
    GateResult,
    GateStatus,
    OverlayUnsupported,
    Phase,
)
from core.gates.pinning import PinError, Pinned, prepare, release
from core.gates.profiles import (
    AI_REVIEW,
    GatesConfig,
    default_config,
    gates_for,
    resolve_profile,
    split_by_phase,
)
from core.gates.repo_config import REPO_CONFIG, RepoGateConfig, load_repo_config
from core.gates.report import GateReporter, result_of
from core.gates.required import RequiredRule
from core.gates.tree import CommitTree, SourceTree, TreeError, WorktreeTree

log = logging.getLogger(__name__)

SETUP_GATE = "gate_config"
"""Name of the result reported when the gates themselves cannot be determined."""
_PROBE_TIMEOUT_S = 30.0


class LocalGateRunner:
    def __init__(self, *, config: GatesConfig | None = None) -> None:
        self._config = config

    async def run(self, ctx: GateContext, phase: Phase) -> list[GateResult]:
        cfg = self._config or default_config()
        reporter = GateReporter(ctx, phase)
        if not await asyncio.to_thread(ctx.worktree.is_dir):
            reason = f"worktree {ctx.worktree} does not exist"
            return [await _setup_failure(reporter, phase, reason)]
        repo: RepoGateConfig | None = None
        repo_error: str | None = None
        try:
            repo = await asyncio.to_thread(load_repo_config, ctx.worktree, ctx.base_sha)
        except GateConfigError as exc:
            repo_error = exc.message
        try:
            gates = gates_for(ctx.profile, ctx.agent_type, ctx.custom_gates, repo, config=cfg)
        except ValidationFailed as exc:
            return [await _setup_failure(reporter, phase, exc.message)]
        if not gates:
            reason = repo_error or (
                f"profile 'custom' names no gates: none in the request and none in {REPO_CONFIG}"
            )
            return [await _setup_failure(reporter, phase, reason)]
        phase_gates = split_by_phase(gates, phase, cfg)
        if repo_error is not None:
            results = []
            for gate in phase_gates:
                await reporter.started(gate)
                result = result_of(gate, GateStatus.ERROR, 0.0, phase=phase, reason=repo_error)
                await reporter.finished(result)
                results.append(result)
            return results
        base: SourceTree | None = None
        base_error: str | None = None
        try:
            base = await asyncio.to_thread(_base_tree, ctx)
        except TreeError as exc:
            base_error = f"cannot read the base commit: {exc.message}"
        plans = await self._plans(ctx, phase_gates, repo, base, base_error)
        timeout_s = repo.timeout_s if repo and repo.timeout_s else ctx.gate_timeout_s
        threshold = cfg.coverage_threshold()
        if repo and repo.coverage_threshold is not None:
            threshold = repo.coverage_threshold
        rule = RequiredRule(ctx, repo, resolve_profile(ctx.profile, ctx.agent_type, cfg))
        run = _Run(ctx, phase, timeout_s, threshold, cfg, base if ctx.base_sha else None)
        results = []
        for gate in phase_gates:
            await reporter.started(gate)
            started = time.monotonic()
            result = await run.gate(plans[gate])
            if result.duration_s == 0.0:
                result.duration_s = time.monotonic() - started
            result = await rule.apply(result)
            await reporter.finished(result)
            results.append(result)
        return results

    async def _plans(
        self,
        ctx: GateContext,
        gates: list[str],
        repo: RepoGateConfig | None,
        base: SourceTree | None,
        base_error: str | None,
    ) -> dict[str, GatePlan]:
        plans: dict[str, GatePlan] = {}
        undetected: list[str] = []
        for gate in gates:
            if gate == AI_REVIEW:
                plans[gate] = GatePlan(gate, source="ai_review")
            elif repo is not None and repo.disabled(gate):
                plans[gate] = GatePlan(
                    gate, skip_reason=f"disabled in {REPO_CONFIG}", source=str(REPO_CONFIG)
                )
            elif repo is not None and (command := repo.command_for(gate)):
                plans[gate] = GatePlan(gate, command=command, source=str(REPO_CONFIG))
            else:
                undetected.append(gate)
        if undetected:
            facts: ProjectFacts | None = None
            error = base_error
            if base is not None:
                try:
                    facts = await asyncio.to_thread(scan_project, base)
                except TreeError as exc:
                    error = f"cannot read the build files of the base commit: {exc.message}"
            tools: set[str] = set()
            if facts is not None:
                tools, error = await self._probe(ctx, facts)
            for gate in undetected:
                if facts is None or error is not None:
                    plans[gate] = GatePlan(gate, error_reason=error, source="detection")
                else:
                    plans[gate] = plan_detected(gate, facts, tools)
        return plans

    async def _probe(self, ctx: GateContext, facts: ProjectFacts) -> tuple[set[str], str | None]:
        if not facts.any_project:
            return set(), None
        try:
            probe = await ctx.executor(
                PROBE_COMMAND, cwd=ctx.worktree, timeout_s=min(_PROBE_TIMEOUT_S, ctx.gate_timeout_s)
            )
        except Exception as exc:
            return set(), f"could not look up the gate tools: {type(exc).__name__}: {exc}"
        if probe.timed_out or probe.exit_code != 0:
            return set(), f"could not look up the gate tools: probe exited {probe.exit_code}"
        return parse_probe(probe.output), None


def _base_tree(ctx: GateContext) -> SourceTree:
    """What defines the gates: the base commit, or the worktree when no base is known."""
    if ctx.base_sha:
        return CommitTree(ctx.worktree, ctx.base_sha)
    return WorktreeTree(ctx.worktree)


class _Run:
    """Running one gate's plan: its command (with the base versions of what it runs) or not."""

    def __init__(
        self,
        ctx: GateContext,
        phase: Phase,
        timeout_s: float,
        threshold: float,
        cfg: GatesConfig,
        base: SourceTree | None,
    ) -> None:
        self.ctx = ctx
        self.phase: Phase = phase
        self.timeout_s = timeout_s
        self.threshold = threshold
        self.cfg = cfg
        self.base = base
        """The base commit's tree (None without a base: nothing to pin against)."""

    async def gate(self, plan: GatePlan) -> GateResult:
        ctx, phase, gate = self.ctx, self.phase, plan.gate
        tail_chars = self.cfg.output_tail_chars
        if gate == AI_REVIEW:
            started = time.monotonic()
            outcome = await ai_review.review(
                ctx.ai_review, ctx.worktree, ctx.base_sha, ctx.commit, self.timeout_s
            )
            return result_of(
                gate,
                outcome.status,
                time.monotonic() - started,
                phase=phase,
                output=outcome.output,
                reason=outcome.reason,
                tail_chars=tail_chars,
            )
        if plan.command is None:
            status = GateStatus.ERROR if plan.error_reason else GateStatus.SKIPPED
            reason = plan.error_reason or plan.skip_reason
            return result_of(gate, status, 0.0, phase=phase, reason=reason)
        command = plan.command
        notes: list[str] = []
        try:
            async with self._pinned(command) as pinned:
                notes = pinned.notes
                extra = {"overlays": pinned.overlays} if pinned.overlays else {}
                res = await ctx.executor(
                    command, cwd=ctx.worktree, timeout_s=self.timeout_s, **extra
                )
        except (PinError, TreeError, OverlayUnsupported) as exc:
            return self._error(gate, command, str(exc), notes)
        except Exception as exc:
            log.exception("gate %s could not run", gate, extra={"agent_id": ctx.agent_id})
            why = f"could not run `{command}`: {type(exc).__name__}: {exc}"
            return self._error(gate, command, why, notes)
        status, reason = judge(gate, command, res, self.timeout_s, self.threshold)
        return result_of(
            gate,
            status,
            res.duration_s,
            phase=phase,
            output=res.output,
            reason=_with_notes(reason, notes),
            command=command,
            tail_chars=tail_chars,
            notes=notes,
        )

    @contextlib.asynccontextmanager
    async def _pinned(self, command: str) -> AsyncIterator[Pinned]:
        """The base versions ``command`` must see, staged for the command's run and deleted
        after it (also when the run fails or is cancelled, even while staging)."""
        base, worktree = self.base, self.ctx.worktree
        if base is None:
            yield Pinned()
            return
        job = asyncio.ensure_future(
            asyncio.to_thread(lambda: prepare(worktree, base, files_run_by(command, base)))
        )
        try:
            pinned = await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(lambda done: _release_done(done, worktree))
            raise
        try:
            yield pinned
        finally:
            release(pinned, worktree)

    def _error(self, gate: str, command: str, reason: str, notes: list[str]) -> GateResult:
        return result_of(
            gate,
            GateStatus.ERROR,
            0.0,
            phase=self.phase,
            reason=_with_notes(reason, notes),
            command=command,
            notes=notes,
        )


def _release_done(job: asyncio.Future[Pinned], worktree: Path) -> None:
    if not job.cancelled() and job.exception() is None:
        release(job.result(), worktree)


def _with_notes(reason: str | None, notes: list[str]) -> str | None:
    text = "; ".join([*([reason] if reason else []), *notes])
    return text or None


def judge(
    gate: str, command: str, res: CommandResult, timeout_s: float, threshold: float
) -> tuple[GateStatus, str | None]:
    """A command's outcome as a gate status and the reason."""
    if res.timed_out:
        return GateStatus.FAILED, f"timed out after {timeout_s:g}s; its process tree was killed"
    if res.exit_code in (126, 127):
        what = "command not found" if res.exit_code == 127 else "command not executable"
        return GateStatus.ERROR, f"{what} (exit {res.exit_code}): `{command}`"
    if gate != "coverage":
        if res.exit_code != 0:
            return GateStatus.FAILED, f"`{command}` exited with {res.exit_code}"
        return GateStatus.PASSED, None
    pct = parse_coverage(res.output)
    if pct is not None and pct < threshold:
        return GateStatus.FAILED, f"coverage {pct:g}% is below the threshold {threshold:g}%"
    if res.exit_code != 0:
        measured = f" (coverage {pct:g}%)" if pct is not None else ""
        return GateStatus.FAILED, f"`{command}` exited with {res.exit_code}{measured}"
    if pct is None:
        return GateStatus.ERROR, f"no coverage percentage found in the output of `{command}`"
    return GateStatus.PASSED, f"coverage {pct:g}% (threshold {threshold:g}%)"


async def _setup_failure(reporter: GateReporter, phase: Phase, reason: str) -> GateResult:
    await reporter.started(SETUP_GATE)
    result = result_of(SETUP_GATE, GateStatus.ERROR, 0.0, phase=phase, reason=reason)
    await reporter.finished(result)
    return result
