"""What a sandbox must bind for a Python virtualenv's interpreter to run inside.

A venv's ``bin/python`` is a symlink into the base installation (e.g. ``/root/.pyenv/versions/X``
or ``/usr``); both the venv and that installation must be visible. ``python_binds`` returns the
directories to pass as ``SandboxSpec.ro_binds``; binding a directory under a hidden home is
allowed (the rest of the home stays invisible).
"""

from __future__ import annotations

import os
from pathlib import Path

_SYSTEM_PREFIXES = ("/usr", "/bin", "/lib", "/lib64", "/sbin")


def _venv_root(python: Path) -> Path | None:
    for parent in python.parents:
        if (parent / "pyvenv.cfg").is_file():
            return parent
    return None


def _prefix_of(executable: Path) -> Path:
    """``/x/bin/python3.11`` -> ``/x``."""
    return executable.parent.parent if executable.parent.name == "bin" else executable.parent


def python_binds(python: str | Path) -> tuple[Path, ...]:
    """Directories to ro-bind so that ``python`` (a venv or base interpreter path) runs inside."""
    exe = Path(os.path.abspath(python))
    out: list[Path] = []
    venv = _venv_root(exe)
    if venv is not None:
        out.append(venv)
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                out.append(_prefix_of(Path(value.strip())))
    # Every hop of the symlink chain, and the final target's installation prefix.
    hop = exe
    for _ in range(40):
        if not hop.is_symlink():
            break
        hop = Path(os.path.normpath(hop.parent / os.readlink(hop)))
        out.append(_prefix_of(hop))
    out.append(_prefix_of(Path(os.path.realpath(exe))))
    result: list[Path] = []
    for p in out:
        if str(p).startswith(_SYSTEM_PREFIXES) and not str(p).startswith("/usr/local"):
            continue  # already visible through the system binds
        if p.exists() and not any(p == r or r in p.parents for r in result):
            result = [r for r in result if p not in r.parents]
            result.append(p)
    return tuple(result)
