"""Errors of the agent layer (runtime results, gateway, prompts, scripted model)."""

from __future__ import annotations

from core.errors import ConfigError, OrchestratorError


class AgentRuntimeError(OrchestratorError):
    """The agent runtime's output could not be understood."""

    code = "agent_runtime_error"


class GatewayError(OrchestratorError):
    """The model gateway could not serve an agent (socket path, duplicate agent...)."""

    code = "gateway_error"


class PromptError(ConfigError):
    """A role prompt template is missing or malformed."""

    code = "invalid_prompt"


class ScriptError(ConfigError):
    """A scripted-model script file is malformed."""

    code = "invalid_script"
