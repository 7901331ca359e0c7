"""Reporting gate progress as events: ``gate.started``, then ``gate.passed`` or ``gate.failed``.

A skipped gate is reported as ``gate.passed`` with ``status: "skipped"`` and its reason when it
does not block, and as ``gate.failed`` with ``status: "skipped"`` when it does (a gate a worker's
profile requires, ``core/gates/required.py``); an errored gate as ``gate.failed`` with
``status: "error"``. Every finish event carries ``{gate, phase, status, duration_s, output_tail,
reason}``, plus ``notes`` when the gate has some (e.g. a file it runs that the agent changed);
``output_tail`` holds at most the configured number of characters (2000 by default).
"""

from __future__ import annotations

import logging
from typing import Any

from core.gates.models import GateContext, GateResult, GateStatus, Phase

log = logging.getLogger(__name__)


def tail(text: str, limit: int) -> str:
    text = text.rstrip()
    return text[-limit:] if limit > 0 else ""


class GateReporter:
    def __init__(self, ctx: GateContext, phase: Phase) -> None:
        self._ctx = ctx
        self._phase = phase

    async def started(self, gate: str) -> None:
        await self._emit("gate.started", {"gate": gate, "phase": self._phase})

    async def finished(self, result: GateResult) -> None:
        event = "gate.passed" if not result.blocking else "gate.failed"
        data: dict[str, Any] = {
            "gate": result.name,
            "phase": self._phase,
            "status": result.status.value,
            "duration_s": round(result.duration_s, 3),
            "output_tail": result.output_tail,
            "reason": result.reason,
        }
        if result.notes:
            data["notes"] = list(result.notes)
        level = logging.WARNING if result.blocking else logging.INFO
        log.log(
            level,
            "gate %s %s",
            result.name,
            result.status.value,
            extra={
                "agent_id": self._ctx.agent_id,
                "task_id": self._ctx.task_id,
                "gate": result.name,
                "phase": self._phase,
                "status": result.status.value,
                "reason": result.reason,
            },
        )
        await self._emit(event, data)

    async def _emit(self, event: str, data: dict[str, Any]) -> None:
        try:
            await self._ctx.emit(event, data)
        except Exception:
            # A broken event sink must not turn a gate run into a crash; the results still return.
            log.exception(
                "emitting %s failed",
                event,
                extra={"agent_id": self._ctx.agent_id, "task_id": self._ctx.task_id},
            )


def result_of(
    name: str,
    status: GateStatus,
    duration_s: float,
    *,
    phase: Phase,
    output: str = "",
    reason: str | None = None,
    command: str | None = None,
    tail_chars: int = 2000,
    notes: list[str] | None = None,
) -> GateResult:
    return GateResult(
        name=name,
        status=status,
        duration_s=duration_s,
        output_tail=tail(output, tail_chars),
        reason=reason,
        phase=phase,
        command=command,
        notes=list(notes or ()),
    )
