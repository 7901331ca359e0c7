"""``CoordinatorGateRunner``: the Quality Coordinator evaluates the gates over HTTP.

Contract (documented in ``docs/coordinator-gates.md``): ``POST {url}/gates/evaluate`` with
``{requestId, agentId, taskId, agentType, profile, phase, gates, commit, baseSha,
coverageThreshold}`` answers ``200 {results: [{name, passed, status?, durationMs, output,
reason?}]}``. 5xx, connection errors and timeouts are retried with exponential backoff and jitter
(same ``requestId``); 4xx is not retried. When no usable answer comes, every gate of the phase is
reported ``error`` with the reason.

The Coordinator decides how to evaluate each gate; the orchestrator still applies the rule of
SPEC §17 to its answers (``core/gates/required.py``): a gate a worker's profile requires that the
Coordinator reports ``skipped`` blocks the push unless the base commit's ``.mosaic/gates.toml``
disables it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yarl import URL

from core.errors import ValidationFailed
from core.gates.models import (
    GateConfigError,
    GateContext,
    GateResult,
    GateStatus,
    Phase,
)
from core.gates.profiles import (
    GatesConfig,
    default_config,
    gates_for,
    resolve_profile,
    split_by_phase,
)
from core.gates.repo_config import RepoGateConfig, load_repo_config
from core.gates.report import GateReporter, result_of
from core.gates.required import WORKER, RequiredRule

log = logging.getLogger(__name__)

EVALUATE_PATH = "gates/evaluate"
MAX_BACKOFF_S = 10.0
_BODY_SNIPPET = 300


class CoordinatorGate(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(min_length=1)
    passed: bool
    status: GateStatus | None = None
    duration_ms: float = Field(default=0.0, alias="durationMs", ge=0)
    output: str = ""
    reason: str | None = None


class CoordinatorAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    results: list[CoordinatorGate]


class _Retryable(Exception):
    """A failed attempt worth repeating (5xx, connection error, timeout)."""


class _Rejected(Exception):
    """An answer that repeating will not change (4xx, malformed body)."""


class CoordinatorGateRunner:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 0.5,
        api_key: str | None = None,
        config: GatesConfig | None = None,
    ) -> None:
        parsed = URL(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise GateConfigError(f"COORDINATOR_URL must be an http(s) URL, got {url!r}")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise GateConfigError("coordinator timeout must be > 0, retries and backoff >= 0")
        base = str(parsed).rstrip("/")
        self.endpoint = f"{base}/{EVALUATE_PATH}"
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._api_key = api_key
        self._config = config

    @property
    def attempts(self) -> int:
        return self._retries + 1

    async def run(self, ctx: GateContext, phase: Phase) -> list[GateResult]:
        cfg = self._config or default_config()
        reporter = GateReporter(ctx, phase)
        repo: RepoGateConfig | None = None
        setup_error: str | None = None
        try:
            # Only a custom profile without gates in the request needs the repository's list;
            # otherwise the Coordinator applies the repository's configuration itself.
            if (
                resolve_profile(ctx.profile, ctx.agent_type, cfg) == "custom"
                and not ctx.custom_gates
            ):
                repo = await asyncio.to_thread(load_repo_config, ctx.worktree, ctx.base_sha)
            gates = gates_for(ctx.profile, ctx.agent_type, ctx.custom_gates, repo, config=cfg)
        except (GateConfigError, ValidationFailed) as exc:
            gates, setup_error = [], exc.message
        else:
            setup_error = None if gates else "profile 'custom' names no gates"
        if setup_error is not None:
            await reporter.started("gate_config")
            failed = result_of(
                "gate_config", GateStatus.ERROR, 0.0, phase=phase, reason=setup_error
            )
            await reporter.finished(failed)
            return [failed]
        phase_gates = split_by_phase(gates, phase, cfg)
        if not phase_gates:
            return []
        rule = await self._rule(ctx, repo, cfg)
        for gate in phase_gates:
            await reporter.started(gate)
        started = time.monotonic()
        body = {
            "requestId": str(uuid.uuid4()),
            "agentId": ctx.agent_id,
            "taskId": ctx.task_id,
            "agentType": ctx.agent_type,
            "profile": ctx.profile,
            "phase": phase,
            "gates": phase_gates,
            "commit": ctx.commit,
            "baseSha": ctx.base_sha,
            "worktree": str(ctx.worktree),
            "coverageThreshold": (
                repo.coverage_threshold
                if repo is not None and repo.coverage_threshold is not None
                else cfg.coverage_threshold()
            ),
        }
        try:
            answer = await self._evaluate(body, ctx)
        except _Rejected as exc:
            results = self._all_error(phase_gates, phase, str(exc), time.monotonic() - started)
        else:
            results = self._map(answer, phase_gates, phase, cfg.output_tail_chars)
        for result in results:
            await rule.apply(result)
            await reporter.finished(result)
        return results

    async def _rule(
        self, ctx: GateContext, repo: RepoGateConfig | None, cfg: GatesConfig
    ) -> RequiredRule:
        """The required-gate rule, with the base configuration (read here for a worker)."""
        problem: str | None = None
        if repo is None and ctx.agent_type == WORKER:
            try:
                repo = await asyncio.to_thread(load_repo_config, ctx.worktree, ctx.base_sha)
            except GateConfigError as exc:
                problem = exc.message
        profile = resolve_profile(ctx.profile, ctx.agent_type, cfg)
        return RequiredRule(ctx, repo, profile, config_problem=problem)

    async def _evaluate(self, body: dict[str, Any], ctx: GateContext) -> CoordinatorAnswer:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        last_error = ""
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            for attempt in range(1, self.attempts + 1):
                try:
                    return await self._attempt(session, body)
                except _Retryable as exc:
                    last_error = str(exc)
                    log.warning(
                        "coordinator attempt %d/%d failed: %s",
                        attempt,
                        self.attempts,
                        last_error,
                        extra={"agent_id": ctx.agent_id, "task_id": ctx.task_id},
                    )
                if attempt < self.attempts:
                    await asyncio.sleep(self._delay(attempt))
        raise _Rejected(f"coordinator unreachable after {self.attempts} attempts: {last_error}")

    def _delay(self, attempt: int) -> float:
        """Exponential backoff (``backoff_s * 2**(attempt-1)``, capped) plus up to 100% jitter."""
        delay: float = min(self._backoff_s * 2.0 ** (attempt - 1), MAX_BACKOFF_S)
        return delay + random.uniform(0, delay)

    async def _attempt(
        self, session: aiohttp.ClientSession, body: dict[str, Any]
    ) -> CoordinatorAnswer:
        try:
            async with session.post(self.endpoint, json=body) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except TimeoutError:
            raise _Retryable(f"no answer within {self._timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None
        snippet = text.strip()[:_BODY_SNIPPET]
        if status >= 500:
            raise _Retryable(f"HTTP {status}: {snippet}")
        if status >= 400:
            raise _Rejected(f"coordinator rejected the request: HTTP {status}: {snippet}")
        if status != 200:
            raise _Rejected(f"coordinator answered HTTP {status}, expected 200: {snippet}")
        try:
            return CoordinatorAnswer.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(body)"
            raise _Rejected(
                f"malformed coordinator answer at {where}: {first['msg']}: {snippet}"
            ) from None

    def _all_error(
        self, gates: list[str], phase: Phase, reason: str, duration_s: float
    ) -> list[GateResult]:
        return [
            result_of(g, GateStatus.ERROR, duration_s, phase=phase, reason=reason) for g in gates
        ]

    def _map(
        self, answer: CoordinatorAnswer, gates: list[str], phase: Phase, tail_chars: int
    ) -> list[GateResult]:
        by_name = {r.name: r for r in answer.results}
        extra = sorted(set(by_name) - set(gates))
        if extra:
            log.warning("coordinator answered for gates not asked: %s", extra)
        results = []
        for gate in gates:
            item = by_name.get(gate)
            if item is None:
                results.append(
                    result_of(
                        gate,
                        GateStatus.ERROR,
                        0.0,
                        phase=phase,
                        reason="the coordinator returned no result for this gate",
                    )
                )
                continue
            status = item.status or (GateStatus.PASSED if item.passed else GateStatus.FAILED)
            reason = item.reason
            if reason is None and status is not GateStatus.PASSED:
                reason = f"{status.value} on the coordinator (no reason given)"
            results.append(
                result_of(
                    gate,
                    status,
                    item.duration_ms / 1000.0,
                    phase=phase,
                    output=item.output,
                    reason=reason,
                    tail_chars=tail_chars,
                )
            )
        return results
