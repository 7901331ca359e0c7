"""Errors of the git layer (clone cache, worktrees, commits, conflicts, push, secret scan)."""

from __future__ import annotations

from typing import Any

from core.errors import OrchestratorError, ValidationFailed


class GitError(OrchestratorError):
    """A git operation failed; the message says which and why (credentials redacted)."""

    code = "git_error"

    def __init__(
        self,
        message: str,
        *,
        command: str | None = None,
        returncode: int | None = None,
        stderr: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message, details=details)
        self.command = command
        self.returncode = returncode
        self.stderr = stderr


class CloneFailed(GitError):
    """The repository could not be cloned into the cache."""

    code = "clone_failed"


class FetchFailed(CloneFailed):
    """A cached clone could not be refreshed from its origin (a kind of clone failure)."""

    code = "fetch_failed"


class BaseNotFound(GitError):
    """The base or target branch does not exist in origin."""

    code = "base_not_found"


class WorktreeError(GitError):
    """A worktree could not be created, used or removed."""

    code = "worktree_error"


class PushRejected(GitError):
    """Origin refused the push (lease broken, hook, permissions, network)."""

    code = "push_rejected"


class ScanError(GitError):
    """The secret scanner could not read what it was asked to scan."""

    code = "scan_error"


class InvalidRepository(ValidationFailed):
    """The repository URL or path is not acceptable."""

    code = "invalid_repository"


class InvalidBranch(ValidationFailed):
    """The branch name is not a valid git branch name."""

    code = "invalid_branch"
