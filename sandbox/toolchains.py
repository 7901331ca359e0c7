"""The operator's toolchains, visible read-only in every sandbox (SPEC §15-16).

Every directory on the orchestrator's ``PATH`` (plus ``SANDBOX_TOOLCHAINS``) is bound read-only,
with what its executables need to run:

- a virtualenv's ``bin`` brings the venv (its site-packages) and its base interpreter;
- a version manager's shims (pyenv) bring the manager's root, which the shims run through;
- an executable that is a symbolic link out of its directory brings its target's package: the
  ``node_modules`` directory holding it (so an npm CLI finds its native binary, e.g. Claude Code's
  ``@anthropic-ai/claude-code-linux-x64``), else the target's directory.

System directories are visible anyway and are not bound again. A candidate that is, or holds, a
hidden path (the state directory, the orchestrator's home) is refused: only the toolchain itself
becomes visible, never the rest of a hidden area.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from sandbox.runtime_binds import python_binds

log = logging.getLogger(__name__)

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_MAX_ENTRIES = 4096
"""Executables looked at per directory (a huge ``bin`` is not walked beyond it)."""


def _is_system(path: Path) -> bool:
    text = str(path)
    return any(text == s or text.startswith(s + "/") for s in _SYSTEM)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _node_modules_of(target: Path) -> Path | None:
    for parent in target.parents:
        if parent.name == "node_modules":
            return parent
    return None


def _needs(directory: Path) -> list[Path]:
    """``directory`` and what its executables need."""
    found = [directory]
    venv = directory.parent
    if (venv / "pyvenv.cfg").is_file():
        python = directory / "python"
        found.extend(python_binds(python) if python.exists() else (venv,))
    if directory.name == "shims" and (directory.parent / "libexec").is_dir():
        found.append(directory.parent)  # pyenv: shims run <root>/libexec/pyenv and <root>/versions
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)[:_MAX_ENTRIES]
    except OSError:
        return found
    for entry in entries:
        if not entry.is_symlink():
            continue
        target = Path(os.path.realpath(entry.path))
        if _within(target, directory) or not target.exists():
            continue
        found.append(_node_modules_of(target) or target.parent)
    return found


def toolchain_binds(
    directories: Iterable[str | Path], *, hidden: Iterable[Path] = ()
) -> tuple[Path, ...]:
    """The read-only binds that make ``directories`` (a PATH) usable inside a sandbox."""
    hidden_paths = [Path(os.path.abspath(h)) for h in hidden]
    candidates: list[Path] = []
    for raw in directories:
        text = str(raw).strip()
        if not text or not os.path.isabs(text):
            continue  # a relative PATH entry means nothing inside the sandbox
        directory = Path(os.path.abspath(text))
        if _is_system(directory) or not directory.is_dir():
            continue
        candidates.extend(_needs(directory))
    result: list[Path] = []
    for path in candidates:
        path = Path(os.path.abspath(path))
        if _is_system(path):
            continue  # visible as a whole already
        if any(_within(h, path) for h in hidden_paths):
            log.warning("toolchain %s not made visible: it holds a hidden path", path)
            continue
        if any(_within(path, kept) for kept in result):
            continue
        result = [kept for kept in result if not _within(kept, path)]
        result.append(path)
    return tuple(result)


def path_directories(path: str | None) -> list[str]:
    return [p for p in (path or "").split(os.pathsep) if p]
