"""Errors of the egress layer."""

from __future__ import annotations

from core.errors import OrchestratorError


class EgressError(OrchestratorError):
    """The egress proxy could not serve an agent (socket path, duplicate agent...)."""

    code = "egress_error"
