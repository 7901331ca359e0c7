"""Where the orchestrator keeps things under its state directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def repos(self) -> Path:
        return self.root / "repos"

    @property
    def worktrees(self) -> Path:
        return self.root / "worktrees"

    @property
    def agents(self) -> Path:
        return self.root / "agents"

    def worktree(self, agent_id: str) -> Path:
        return self.worktrees / agent_id

    def agent_dir(self, agent_id: str) -> Path:
        """Logs and transcript of one agent (kept after it ends)."""
        return self.agents / agent_id

    def create(self) -> None:
        for path in (self.root, self.repos, self.worktrees, self.agents):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
