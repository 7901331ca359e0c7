"""The Claude agent runtime, the model gateway, role prompts and the scripted model."""

from typing import TYPE_CHECKING, Any

from core.agents.errors import AgentRuntimeError, GatewayError, PromptError, ScriptError
from core.agents.gateway import AgentEndpoint, ModelGateway, model_config_problem
from core.agents.prices import Price, PriceTable
from core.agents.results import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    RuntimeResult,
    Verdict,
    parse_runtime_output,
    parse_runtime_result,
)
from core.agents.roles import (
    RuntimeConfig,
    build_prompts,
    build_runtime_config,
    runtime_argv,
    runtime_path,
    runtime_ro_binds,
)
from core.agents.scripts import Script, load_scripts

if TYPE_CHECKING:
    from core.agents.scripted import RecordedRequest, ScriptedModelServer


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m core.agents.scripted`` does not import the module twice.
    if name in ("RecordedRequest", "ScriptedModelServer"):
        from core.agents import scripted

        return getattr(scripted, name)
    raise AttributeError(f"module 'core.agents' has no attribute {name!r}")


__all__ = [
    "EXIT_BUDGET",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "AgentEndpoint",
    "AgentRuntimeError",
    "GatewayError",
    "ModelGateway",
    "Price",
    "PriceTable",
    "PromptError",
    "RecordedRequest",
    "RuntimeConfig",
    "RuntimeResult",
    "Script",
    "ScriptError",
    "ScriptedModelServer",
    "Verdict",
    "build_prompts",
    "build_runtime_config",
    "load_scripts",
    "model_config_problem",
    "parse_runtime_output",
    "parse_runtime_result",
    "runtime_argv",
    "runtime_path",
    "runtime_ro_binds",
]
