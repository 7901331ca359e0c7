"""Streaming git readers for the secret scan (the runner's helpers buffer a whole output).

Synchronous, for a worker thread: :class:`ObjectReader` (one ``git cat-file --batch-command``)
gives an object's type and size, then its content in bounded chunks; :func:`first_parent_commits`
and :func:`tree_changes` (``git diff-tree --stdin -z --raw``) list what each commit changes.
Content is read raw, never through ``git diff``: no textconv, no filters, and the repository's
attributes cannot mark anything binary or hide it. Every process runs with the runner's hardened
command line and environment (no hooks, no replace objects, no system config).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from core.git.errors import ScanError
from core.git.runner import git_argv, git_env, tail

CHUNK = 1 << 20
GITLINK = "160000"


class Cancelled(ScanError):
    """The scan was abandoned (its caller was cancelled)."""


@dataclass(frozen=True)
class Where:
    """Where git runs: an explicit git dir (an untrusted worktree's, taken from the cache) or a
    directory in which git finds its repository."""

    cwd: Path
    git_dir: Path | None = None


@dataclass(frozen=True)
class Change:
    """One entry of ``git diff-tree --raw``: a path a commit adds, changes, renames or deletes."""

    commit: str
    status: str
    old_mode: str
    new_mode: str
    old_oid: str
    new_oid: str
    path: str
    old_path: str | None = None


def _popen(
    where: Where, *args: str, stdin: bool = False
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    extra = {"GIT_DIR": str(where.git_dir)} if where.git_dir is not None else {}
    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _stop); never a pipe nobody reads
    try:
        proc = subprocess.Popen(
            git_argv(*args),
            cwd=where.cwd,
            env=git_env(extra),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
    except OSError as exc:
        errors.close()
        raise ScanError(f"cannot run git {args[0]}: {exc.strerror}") from exc
    return proc, errors


def _stop(proc: subprocess.Popen[bytes], errors: IO[bytes]) -> str:
    """End ``proc`` (killing it if still running) and return its stderr."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()
    errors.seek(0)
    text = errors.read().decode("utf-8", "replace")
    errors.close()
    return text


class ObjectReader:
    """One ``git cat-file --batch-command`` process: object types and sizes, contents in chunks.

    Requests are pipelined: a batch of commands is written at once, then the answers are read in
    order (batches stay small enough that git's input pipe holds a whole batch, so neither side
    can block the other)."""

    BATCH = 256

    def __init__(self, where: Where, cancel: threading.Event | None = None) -> None:
        self._cancel = cancel or threading.Event()
        self._proc, self._errors = _popen(where, "cat-file", "--batch-command", stdin=True)
        self._closed = False

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _stop(self._proc, self._errors)

    def _check(self) -> None:
        if self._cancel.is_set():
            self.close()
            raise Cancelled("secret scan cancelled")

    def _fail(self, what: str) -> ScanError:
        self._closed = True
        detail = tail(_stop(self._proc, self._errors)) or "git ended"
        return ScanError(f"cannot read {what}: {detail}")

    def _send(self, verb: str, oids: Sequence[str]) -> None:
        assert self._proc.stdin is not None
        self._check()
        try:
            self._proc.stdin.write("".join(f"{verb} {oid}\n" for oid in oids).encode())
            self._proc.stdin.flush()
        except OSError as exc:
            raise self._fail("objects") from exc

    def _header(self, oid: str) -> tuple[str, int] | None:
        assert self._proc.stdout is not None
        try:
            header = self._proc.stdout.readline().decode("ascii", "replace").split()
        except OSError as exc:
            raise self._fail(f"object {oid}") from exc
        if len(header) == 2 and header[1] == "missing":
            return None
        if len(header) != 3 or header[0] != oid or not header[2].isdigit():
            raise self._fail(f"object {oid}")
        return header[1], int(header[2])

    def infos(self, oids: Sequence[str]) -> dict[str, tuple[str, int] | None]:
        """``(type, size)`` of each object; ``None`` for one the repository does not have."""
        found: dict[str, tuple[str, int] | None] = {}
        for i in range(0, len(oids), self.BATCH):
            batch = oids[i : i + self.BATCH]
            self._send("info", batch)
            for oid in batch:
                found[oid] = self._header(oid)
        return found

    def read_each(
        self,
        oids: Sequence[str],
        begin: Callable[[str], Callable[[bytes], None]],
        end: Callable[[str, int], None],
        chunk: int = CHUNK,
    ) -> None:
        """For each object: ``begin(oid)`` gives a sink that gets its content in chunks of at most
        ``chunk`` bytes, then ``end(oid, size)``. A missing object raises :class:`ScanError`."""
        stdout = self._proc.stdout
        assert stdout is not None
        for i in range(0, len(oids), self.BATCH // 4):
            batch = oids[i : i + self.BATCH // 4]
            self._send("contents", batch)
            for oid in batch:
                found = self._header(oid)
                if found is None:
                    self.close()
                    raise ScanError(f"cannot read object {oid}: missing")
                sink, remaining = begin(oid), found[1]
                while remaining:
                    self._check()
                    data = stdout.read(min(chunk, remaining))
                    if not data:
                        raise self._fail(f"object {oid}")
                    remaining -= len(data)
                    sink(data)
                if stdout.read(1) != b"\n":
                    raise self._fail(f"object {oid}")
                end(oid, found[1])


def first_parent_commits(where: Where, rev_range: str) -> list[tuple[str, str | None]]:
    """The commits of ``rev_range``, oldest first, each with its first parent (``None``: root)."""
    proc = subprocess.run(
        git_argv(
            "rev-list",
            "--reverse",
            "--topo-order",
            "--parents",
            "--end-of-options",
            rev_range,
            "--",
        ),
        cwd=where.cwd,
        env=git_env({"GIT_DIR": str(where.git_dir)} if where.git_dir is not None else {}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        start_new_session=True,
    )
    if proc.returncode != 0:
        detail = tail(proc.stderr.decode("utf-8", "replace"))
        raise ScanError(f"cannot read commits {rev_range!r}: {detail}", returncode=proc.returncode)
    commits: list[tuple[str, str | None]] = []
    for line in proc.stdout.decode("ascii", "replace").splitlines():
        ids = line.split()
        if ids:
            commits.append((ids[0], ids[1] if len(ids) > 1 else None))
    return commits


def _tokens(stream: IO[bytes], cancel: threading.Event) -> Iterator[bytes]:
    rest = b""
    while data := os.read(stream.fileno(), 1 << 16):
        if cancel.is_set():
            raise Cancelled("secret scan cancelled")
        parts = (rest + data).split(b"\0")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _parse(tokens: Iterator[bytes]) -> Iterator[Change]:
    commit = ""
    for token in tokens:
        if not token.startswith(b":"):
            commit = token.decode("ascii", "replace").strip()
            continue
        old_mode, new_mode, old_oid, new_oid, status = token[1:].decode("ascii").split()
        first = next(tokens).decode("utf-8", "replace")
        if status[0] in "RC":
            second = next(tokens).decode("utf-8", "replace")
            yield Change(commit, status[0], old_mode, new_mode, old_oid, new_oid, second, first)
        else:
            yield Change(commit, status[0], old_mode, new_mode, old_oid, new_oid, first)


def tree_changes(
    where: Where, commits: Sequence[tuple[str, str | None]], cancel: threading.Event | None = None
) -> Iterator[Change]:
    """What each commit changes against its first parent (everything, for a root commit), with
    renames detected; merges are compared with their first parent, so what they bring counts."""
    cancel = cancel or threading.Event()
    if not commits:
        return
    proc, errors = _popen(
        where,
        "diff-tree",
        "--stdin",
        "-r",
        "-z",
        "--raw",
        "--no-abbrev",
        "--find-renames",
        "--root",
        stdin=True,
    )
    lines = b"".join(f"{c} {p}\n".encode() if p else f"{c}\n".encode() for c, p in commits)

    def write() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(lines)
            proc.stdin.close()

    writer = threading.Thread(target=write, name="scan-diff-tree-stdin", daemon=True)
    writer.start()
    code = -1
    try:
        assert proc.stdout is not None
        yield from _parse(_tokens(proc.stdout, cancel))
        code = proc.wait()
    finally:
        if proc.poll() is None:  # abandoned: a blocked writer gets EPIPE once git is gone
            proc.kill()
        writer.join()
        stderr = _stop(proc, errors)
    if code != 0:
        raise ScanError(f"cannot list the changes of the commits: {tail(stderr)}", returncode=code)
