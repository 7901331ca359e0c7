"""Git workflow for agents: clone cache, worktrees, commits, conflicts, push, secret scanning."""

from core.git.cache import RepoCache
from core.git.commits import commit_all, diff_text, new_commits
from core.git.conflicts import check_conflicts
from core.git.credentials import Credentials, repository_credentials, split_credentials
from core.git.errors import (
    BaseNotFound,
    CloneFailed,
    FetchFailed,
    GitError,
    InvalidBranch,
    InvalidRepository,
    PushRejected,
    ScanError,
    WorktreeError,
)
from core.git.push import push
from core.git.secrets import Finding, scan_commits, scan_paths, scan_text
from core.git.validation import validate_branch, validate_repository
from core.git.worktrees import (
    Worktree,
    create_worktree,
    git_metadata_paths,
    prune_worktrees,
    remove_worktree,
)

__all__ = [
    "BaseNotFound",
    "CloneFailed",
    "Credentials",
    "FetchFailed",
    "Finding",
    "GitError",
    "InvalidBranch",
    "InvalidRepository",
    "PushRejected",
    "RepoCache",
    "ScanError",
    "Worktree",
    "WorktreeError",
    "check_conflicts",
    "commit_all",
    "create_worktree",
    "diff_text",
    "git_metadata_paths",
    "new_commits",
    "prune_worktrees",
    "push",
    "remove_worktree",
    "repository_credentials",
    "scan_commits",
    "scan_paths",
    "scan_text",
    "split_credentials",
    "validate_branch",
    "validate_repository",
]
