"""The orchestrator's exception hierarchy.

Every error a user can see carries a readable message; the API maps the classes to
HTTP status codes in one place (``core/api/errors.py``) and the dashboard shows the message.
"""

from __future__ import annotations

from typing import Any


class OrchestratorError(Exception):
    """Base of every error the orchestrator reports to a user."""

    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationFailed(OrchestratorError):
    """The request is malformed or invalid (HTTP 400)."""

    code = "invalid_request"


class NotFound(OrchestratorError):
    """The agent or task does not exist (HTTP 404)."""

    code = "not_found"


class Conflict(OrchestratorError):
    """The request conflicts with current state (HTTP 409)."""

    code = "conflict"


class NotReady(OrchestratorError):
    """A dependency (Valkey, queue, sandbox) is not usable (HTTP 503)."""

    code = "not_ready"


class StoreUnavailable(NotReady):
    """Valkey does not answer (HTTP 503): down, paused or unreachable (SPEC §19)."""

    code = "store_unavailable"


class IllegalTransition(OrchestratorError):
    """A lifecycle transition that the state machine refuses."""

    code = "illegal_transition"


class ConfigError(OrchestratorError):
    """Invalid configuration; start-up stops with this message."""

    code = "invalid_config"


class AgentFailure(OrchestratorError):
    """A stage of an agent's run failed; ``stage`` names it (workspace, sandbox, agent, gates...).

    ``retryable`` failures give the queue's retry policy another attempt.
    """

    code = "agent_failed"

    def __init__(
        self, stage: str, message: str, *, retryable: bool = False, details: Any = None
    ) -> None:
        super().__init__(f"{stage}: {message}", details=details)
        self.stage = stage
        self.retryable = retryable
