"""Quality gates: profiles, the local and Coordinator runners, and the command executor."""

from core.gates.coordinator import CoordinatorGateRunner
from core.gates.executor import SubprocessExecutor
from core.gates.factory import create_gate_runner
from core.gates.local import LocalGateRunner
from core.gates.models import (
    AiReview,
    CommandExecutor,
    CommandResult,
    Emit,
    GateConfigError,
    GateContext,
    GateResult,
    GateRunner,
    GateStatus,
    Overlay,
    OverlayUnsupported,
    Phase,
)
from core.gates.profiles import (
    GatesConfig,
    default_config,
    gates_for,
    load_gates_config,
    resolve_profile,
    validate_gate_names,
)
from core.gates.repo_config import RepoGateConfig, load_repo_config, parse_repo_config
from core.gates.tree import CommitTree, SourceTree, TreeError, WorktreeTree

__all__ = [
    "AiReview",
    "CommandExecutor",
    "CommandResult",
    "CommitTree",
    "CoordinatorGateRunner",
    "Emit",
    "GateConfigError",
    "GateContext",
    "GateResult",
    "GateRunner",
    "GateStatus",
    "GatesConfig",
    "LocalGateRunner",
    "Overlay",
    "OverlayUnsupported",
    "Phase",
    "RepoGateConfig",
    "SourceTree",
    "SubprocessExecutor",
    "TreeError",
    "WorktreeTree",
    "create_gate_runner",
    "default_config",
    "gates_for",
    "load_gates_config",
    "load_repo_config",
    "parse_repo_config",
    "resolve_profile",
    "validate_gate_names",
]
