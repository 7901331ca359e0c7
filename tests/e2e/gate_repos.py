"""Helpers for end-to-end tests whose origin needs particular gates or files on ``main``.

Since SPEC §17 (gate integrity), a gate that a worker's profile requires and that has nothing to
run blocks the push: a repository without code to check says so on its base branch, as
:func:`declare_no_tools` does.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.conftest import git

NO_TOOLS = """\
# A repository with nothing to type-check, lint or test says so (SPEC §17).
[gates]
typecheck = false
lint = false
tests = false
coverage = false
"""


def push_files(
    origin: Path, tmp_path: Path, files: dict[str, str], message: str = "base", *,
    executable: tuple[str, ...] = (),
) -> str:  # fmt: skip
    """Commit ``files`` (path -> text) on top of origin's ``main`` and push; the new commit."""
    seed = tmp_path / f"seed-{uuid.uuid4().hex[:8]}"
    git("clone", "-q", str(origin), str(seed))
    for name, text in files.items():
        path = seed / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name in executable:
        os.chmod(seed / name, 0o755)
    git("add", "--", *files, cwd=seed)
    git("commit", "-qm", message, cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    return git("rev-parse", "HEAD", cwd=seed)


def push_gates(origin: Path, tmp_path: Path, toml: str) -> str:
    """Set ``.mosaic/gates.toml`` on origin's ``main``."""
    return push_files(origin, tmp_path, {".mosaic/gates.toml": toml}, "gates")


def declare_no_tools(origin: Path, tmp_path: Path) -> str:
    """Disable the standard profile's gates on origin's ``main`` (nothing there to check)."""
    return push_gates(origin, tmp_path, NO_TOOLS)


def branches(origin: Path) -> list[str]:
    out = git("--git-dir", str(origin), "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return out.split()
