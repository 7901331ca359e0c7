"""The one place where the gate runner is chosen: Coordinator over HTTP, or local."""

from __future__ import annotations

from typing import Any

from core.gates.coordinator import CoordinatorGateRunner
from core.gates.local import LocalGateRunner
from core.gates.models import GateRunner


def create_gate_runner(coordinator_url: str | None, **options: Any) -> GateRunner:
    """``CoordinatorGateRunner(coordinator_url, **options)`` when a URL is set
    (``COORDINATOR_URL``), else ``LocalGateRunner(**options)``.

    Options: ``config`` (both); ``timeout_s``, ``retries``, ``backoff_s``, ``api_key`` (Coordinator
    only; ignored, with ``None`` values, by the local runner so one call site serves both).
    """
    if coordinator_url and coordinator_url.strip():
        return CoordinatorGateRunner(coordinator_url, **options)
    local_options = {k: v for k, v in options.items() if k == "config"}
    return LocalGateRunner(**local_options)
