"""The run pipeline: one attempt of one agent, stage by stage (ARCHITECTURE "second wave").

workspace -> launch (a runtime's session in its sandbox) -> follow -> finish -> cleanup, carried
by one ``RunContext``.
"""

from core.run.ai_review import REVIEW_SUFFIX, AiReviewer
from core.run.context import RunContext
from core.run.finish import Finisher
from core.run.gate_exec import SandboxExecutor
from core.run.launch import Launch, LaunchOutcome, SandboxPolicy, base_env
from core.run.spawner import Spawner
from core.run.workspace import Workspace, WorkspaceManager

__all__ = [
    "REVIEW_SUFFIX",
    "AiReviewer",
    "Finisher",
    "Launch",
    "LaunchOutcome",
    "RunContext",
    "SandboxExecutor",
    "SandboxPolicy",
    "Spawner",
    "Workspace",
    "WorkspaceManager",
    "base_env",
]
