"""Files a gate command runs, used at their base version (SPEC §17, gate integrity).

A gate command comes from the base commit (``.mosaic/gates.toml`` or detection), but the files
it runs live in the agent's worktree: with ``tests = "sh ci/test.sh"`` an agent could rewrite
``ci/test.sh`` to ``exit 0``. For the files a command runs (``core/gates/command_files.py``),
:func:`prepare` compares each with the base commit and, when the agent changed or deleted it,
writes the base version to a private temporary file that the executor binds read-only over the
worktree path for that command only (``SandboxSpec.overlays``); :func:`release` deletes it and
the empty mount point a bind leaves for a deleted file. The change itself stays in the agent's
commit and is reported in the gate's ``notes``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.gates.models import Overlay
from core.gates.tree import SourceTree
from core.safeio import MiB, RefusedFile, open_untrusted

PIN_MAX_BYTES = 64 * MiB
"""A file larger than this (base or worktree version) is not pinned: the gate errors instead."""


class PinError(Exception):
    """A file the command runs cannot be shown at its base version; the gate cannot run."""


@dataclass
class Pinned:
    """The overlays of one command, what to tell the user, and what to clean up after it."""

    overlays: list[Overlay] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    staging: Path | None = None
    placeholders: list[tuple[str, list[str]]] = field(default_factory=list)
    """``(file, directories)`` the bind may create in the worktree (absent before the gate)."""


def prepare(worktree: Path, tree: SourceTree, files: list[str]) -> Pinned:
    """Compare ``files`` with their base version; stage the ones the agent changed (blocking).

    Raises :class:`PinError` when a changed file cannot be covered (the agent made it, or a
    directory above it, a link or another kind of file; it is too large). On error nothing is
    left staged.
    """
    pinned = Pinned()
    try:
        for rel in files:
            entry = tree.entry(rel)
            if entry is None or entry.kind != "file" or entry.oid is None:
                continue
            state, missing = _worktree_state(worktree, rel, entry.oid, entry.executable)
            if state == "same":
                continue
            data = tree.read(rel, PIN_MAX_BYTES)
            if data is None:
                continue
            if pinned.staging is None:
                pinned.staging = Path(tempfile.mkdtemp(prefix="mosaic-gate-base-"))
                pinned.staging.chmod(0o755)  # the sandbox user binds (reads) these files
            staged = pinned.staging / f"{len(pinned.overlays)}-{posixpath.basename(rel)}"
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            staged.chmod(0o755 if entry.executable else 0o644)
            pinned.overlays.append((staged, worktree / rel))
            what = "deleted" if state == "deleted" else "changed"
            pinned.notes.append(f"{rel} was {what} by the agent; the gate ran its base version")
            if state == "deleted":
                pinned.placeholders.append((rel, missing))
    except RefusedFile as exc:
        release(pinned, worktree)
        raise PinError(f"cannot run the base version of {exc.name}: {exc.why}") from exc
    except BaseException:
        release(pinned, worktree)
        raise
    return pinned


def _worktree_state(worktree: Path, rel: str, oid: str, executable: bool) -> tuple[str, list[str]]:
    """``("same" | "changed" | "deleted", directories absent above a deleted file)``."""
    missing = _absent_dirs(worktree, rel)
    if missing:
        return "deleted", missing
    try:
        fd = open_untrusted(rel, root=worktree)
    except RefusedFile as exc:
        raise PinError(
            f"{rel} was replaced by the agent ({exc.why}); the gate cannot run its base version"
        ) from None
    if fd is None:
        return "deleted", []
    try:
        st = os.fstat(fd)
        if st.st_size > PIN_MAX_BYTES:
            return "changed", []
        if bool(st.st_mode & 0o100) != executable:
            return "changed", []
        digest = hashlib.sha256() if len(oid) == 64 else hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % st.st_size)
        offset = 0
        while chunk := os.pread(fd, MiB, offset):
            digest.update(chunk)
            offset += len(chunk)
        if offset != st.st_size:
            return "changed", []
    finally:
        os.close(fd)
    return ("same" if digest.hexdigest() == oid else "changed"), []


def _absent_dirs(worktree: Path, rel: str) -> list[str]:
    """The directories above ``rel`` that do not exist (a bind would create them).

    Raises :class:`PinError` when one exists but is not a directory (a link, a file).
    """
    parts = rel.split("/")[:-1]
    for i in range(len(parts)):
        here = "/".join(parts[: i + 1])
        try:
            mode = os.lstat(worktree / here).st_mode
        except FileNotFoundError:
            return ["/".join(parts[: j + 1]) for j in range(i, len(parts))]
        if not stat.S_ISDIR(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
            raise PinError(
                f"{here} is {kind} in the worktree; the gate cannot run the base version of {rel}"
            )
    return []


def release(pinned: Pinned, worktree: Path) -> None:
    """Delete the staged files and the empty placeholders a bind left (never raises)."""
    if pinned.staging is not None:
        shutil.rmtree(pinned.staging, ignore_errors=True)
        pinned.staging = None
    for rel, dirs in pinned.placeholders:
        with contextlib.suppress(OSError):
            _remove_placeholder(worktree, rel, dirs)
    pinned.placeholders = []


def _remove_placeholder(worktree: Path, rel: str, created: list[str]) -> None:
    """Remove the empty file at ``rel`` and the ``created`` directories left empty.

    Directories are opened one by one without following a link, so nothing outside the
    worktree is ever touched.
    """
    parts = rel.split("/")
    fds = [os.open(worktree, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for part in parts[:-1]:
            fds.append(
                os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fds[-1])
            )  # fmt: skip
        st = os.lstat(parts[-1], dir_fd=fds[-1])
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(parts[-1], dir_fd=fds[-1])
        for depth in range(len(parts) - 1, 0, -1):
            if "/".join(parts[:depth]) not in created:
                break
            try:
                os.rmdir(parts[depth - 1], dir_fd=fds[depth - 1])
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    break
                raise
    finally:
        for fd in fds:
            os.close(fd)
