"""Read-only views of a source tree: the agent's worktree, or a commit read through git.

Gate detection (``core/gates/detect.py``) and the pinning of the files a gate command runs
(``core/gates/pinning.py``) read build files through :class:`SourceTree`, so the same code works on

- :class:`WorktreeTree`: a directory on disk the agent controls (read through
  :mod:`core.safeio`: no symbolic link followed, regular files only, bounded reads), and
- :class:`CommitTree`: a commit of the repository (the agent's base commit), read with
  ``git ls-tree -r -z`` (bounded) and ``git cat-file`` (capped); nothing is checked out.

Paths are relative POSIX strings (``"tests/integration"``; ``""`` is the root).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from core.git.runner import git_argv, git_env
from core.safeio import RefusedFile, read_capped

Kind = Literal["file", "dir", "link", "other"]

INDEX_MAX_ENTRIES = 100_000
"""A commit's recursive listing is read up to this many entries (the rest is looked up lazily)."""
INDEX_MAX_BYTES = 16 * 1024 * 1024
LIST_MAX_ENTRIES = 20_000
"""At most this many entries of one directory are listed (and at most ``LIST_MAX_BYTES``)."""
LIST_MAX_BYTES = 4 * 1024 * 1024
_GIT_TIMEOUT_S = 60.0
_REV = re.compile(r"^[0-9A-Za-z][\w./@^~{}-]{0,199}$")
_WHY = {
    "link": "a symbolic link (not followed)",
    "dir": "a directory",
    "other": "not a regular file",
}


class TreeError(Exception):
    """A tree could not be read (unknown commit, git failed); the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Entry:
    kind: Kind
    executable: bool = False
    oid: str | None = None
    """The git object id (commits only)."""


class SourceTree(Protocol):
    label: str
    """What the tree is, for messages (``"the worktree"``, ``"commit 1a2b3c4d5e6f"``)."""

    def entry(self, path: str) -> Entry | None:
        """What is at ``path`` (None: nothing). A symbolic link is reported, never followed."""
        ...

    def read(self, path: str, max_bytes: int) -> bytes | None:
        """The content of the regular file ``path``; None if absent.

        Raises :class:`~core.safeio.RefusedFile` for a link, a directory, a special file or a
        file larger than ``max_bytes`` (never read whole).
        """
        ...

    def list_dir(self, path: str) -> dict[str, Entry]:
        """The entries of directory ``path`` by name (at most ``LIST_MAX_ENTRIES``)."""
        ...

    def walk(self) -> Iterator[tuple[str, list[str], list[str]]]:
        """Like ``os.walk`` (top-down; prune by editing the directory list): relative paths."""
        ...


def is_file(tree: SourceTree, path: str) -> bool:
    found = tree.entry(path)
    return found is not None and found.kind == "file"


def is_dir(tree: SourceTree, path: str) -> bool:
    found = tree.entry(path)
    return found is not None and found.kind == "dir"


def _parts(path: str) -> list[str]:
    parts = [p for p in PurePosixPath(path).parts if p not in ("", ".")]
    if any(p in ("..", "/") for p in parts):
        raise RefusedFile(path, "a path leaving its directory")
    return parts


# -- the worktree ----------------------------------------------------------------------------


class WorktreeTree:
    """A directory on disk that the agent controls (no link followed, reads bounded)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = "the worktree"

    def entry(self, path: str) -> Entry | None:
        node = self.root
        mode = 0
        for part in _parts(path):
            if node is not self.root and not stat.S_ISDIR(mode):
                return None
            node = node / part
            try:
                mode = os.lstat(node).st_mode
            except OSError:
                return None
        if node is self.root:
            return Entry("dir")
        return _entry_of(mode)

    def read(self, path: str, max_bytes: int) -> bytes | None:
        return read_capped(path, max_bytes, root=self.root)

    def list_dir(self, path: str) -> dict[str, Entry]:
        found = self.entry(path)
        if found is None or found.kind != "dir":
            return {}
        out: dict[str, Entry] = {}
        try:
            with os.scandir(self.root.joinpath(*_parts(path))) as entries:
                for item in entries:
                    if len(out) >= LIST_MAX_ENTRIES:
                        break
                    try:
                        out[item.name] = _entry_of(item.stat(follow_symlinks=False).st_mode)
                    except OSError:
                        continue
        except OSError:
            return out
        return out

    def walk(self) -> Iterator[tuple[str, list[str], list[str]]]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            yield ("" if rel == "." else rel), dirnames, filenames


def _entry_of(mode: int) -> Entry:
    if stat.S_ISREG(mode):
        return Entry("file", executable=bool(mode & 0o100))
    if stat.S_ISDIR(mode):
        return Entry("dir")
    if stat.S_ISLNK(mode):
        return Entry("link")
    return Entry("other")


# -- a commit --------------------------------------------------------------------------------


def _kind_of_mode(mode: bytes) -> Entry | None:
    if mode == b"100644":
        return Entry("file")
    if mode == b"100755":
        return Entry("file", executable=True)
    if mode == b"40000" or mode == b"040000":
        return Entry("dir")
    if mode == b"120000":
        return Entry("link")
    if mode == b"160000":
        return Entry("other")
    return None


def run_bounded(
    argv: list[str], max_bytes: int, timeout_s: float = _GIT_TIMEOUT_S
) -> tuple[int, bytes, bool, str]:
    """Run ``argv``; ``(exit code, stdout up to max_bytes, truncated, stderr tail)``.

    Reading stops (and the process is killed) once ``max_bytes`` have come, so a huge output
    never lands in memory; ``timeout_s`` kills a process that takes too long.
    """
    proc = subprocess.Popen(
        argv,
        env=git_env({"GIT_LITERAL_PATHSPECS": "1"}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read(max_bytes + 1)
        truncated = len(out) > max_bytes
        if truncated:
            proc.kill()
            out = out[:max_bytes]
        err = proc.stderr.read(64 * 1024)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return code, out, truncated, err.decode("utf-8", "replace").strip()[-500:]


class CommitTree:
    """A commit of the repository that ``repo`` (a worktree or a git dir) belongs to.

    The first lookup lists the whole commit once (``git ls-tree -r -z``, at most
    ``INDEX_MAX_ENTRIES`` entries); when a listing was cut short, paths it did not reach are
    looked up directory by directory. Blocking (git runs): call it off the event loop.
    """

    def __init__(self, repo: Path, commit: str) -> None:
        if not _REV.match(commit):
            raise TreeError(f"invalid commit {commit!r}")
        self.repo = repo
        code, out, _trunc, err = self._git(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}"
        )
        if code != 0:
            raise TreeError(f"commit {commit!r} not found in {repo}" + (f": {err}" if err else ""))
        self.sha = out.decode().strip()
        self.label = f"commit {self.sha[:12]}"
        self._known: dict[str, dict[str, Entry]] | None = None
        self._asked: dict[str, dict[str, Entry]] = {}
        """Directories listed one by one (only when the recursive listing was cut short)."""
        self._complete = False

    def _git(self, *args: str, max_bytes: int = 1024 * 1024) -> tuple[int, bytes, bool, str]:
        argv = git_argv("-C", str(self.repo), *args)
        try:
            return run_bounded(argv, max_bytes)
        except OSError as exc:
            raise TreeError(f"cannot run git: {exc.strerror or exc}") from exc

    # -- the index: every file of the commit, from one recursive listing --
    def _index(self) -> dict[str, dict[str, Entry]]:
        """Directory -> its entries, as far as the (bounded) recursive listing reached."""
        if self._known is not None:
            return self._known
        code, out, truncated, err = self._git(
            "ls-tree", "-r", "-z", "--full-tree", self.sha, max_bytes=INDEX_MAX_BYTES
        )
        if code != 0 and not truncated:
            raise TreeError(f"cannot list {self.label}: {err or f'git exited {code}'}")
        # the last piece is empty (after the final NUL) or a record cut short: drop it
        records = out.split(b"\0")[:-1]
        known: dict[str, dict[str, Entry]] = {"": {}}
        for record in records[:INDEX_MAX_ENTRIES]:
            parsed = _parse_record(record)
            if parsed is None:
                continue
            name, found = parsed
            parent, _, leaf = name.rpartition("/")
            if parent not in known:
                for d in _ancestors(parent):
                    up, _, sub = d.rpartition("/")
                    known.setdefault(d, {})
                    known.setdefault(up, {})[sub] = Entry("dir")
            known[parent][leaf] = found
        self._complete = not truncated and len(records) <= INDEX_MAX_ENTRIES
        self._known = known
        return known

    def entry(self, path: str) -> Entry | None:
        parts = _parts(path)
        if not parts:
            return Entry("dir")
        parent, name = "/".join(parts[:-1]), parts[-1]
        return self.list_dir(parent).get(name)

    def list_dir(self, path: str) -> dict[str, Entry]:
        key = "/".join(_parts(path))
        known = self._index()
        if self._complete:
            return known.get(key, {})
        if key in self._asked:
            return self._asked[key]
        # the recursive listing was cut short: ask git for this directory alone
        if key:
            up = self.entry(key)
            if up is None or up.kind != "dir":
                self._asked[key] = {}
                return {}
        treeish = f"{self.sha}:{key}" if key else f"{self.sha}^{{tree}}"
        code, out, truncated, err = self._git(
            "ls-tree", "-z", "--full-tree", treeish, max_bytes=LIST_MAX_BYTES
        )
        if code != 0 and not truncated:
            raise TreeError(f"cannot list {key or '/'} in {self.label}: {err}")
        listing: dict[str, Entry] = {}
        for record in out.split(b"\0")[:-1][:LIST_MAX_ENTRIES]:
            parsed = _parse_record(record)
            if parsed is not None:
                listing[parsed[0]] = parsed[1]
        self._asked[key] = listing
        return listing

    def read(self, path: str, max_bytes: int) -> bytes | None:
        found = self.entry(path)
        if found is None:
            return None
        if found.kind != "file" or found.oid is None:
            raise RefusedFile(path, _WHY.get(found.kind, "not a regular file"))
        code, out, truncated, err = self._git("cat-file", "blob", found.oid, max_bytes=max_bytes)
        if truncated:
            raise RefusedFile(path, f"larger than {max_bytes} bytes")
        if code != 0:
            raise TreeError(f"cannot read {path} in {self.label}: {err}")
        return out

    def walk(self) -> Iterator[tuple[str, list[str], list[str]]]:
        """Over what the recursive listing holds (a cut listing gives a bounded walk)."""
        known = self._index()
        stack = [""]
        while stack:
            top = stack.pop()
            listing = known.get(top, {})
            dirnames = sorted(n for n, e in listing.items() if e.kind == "dir")
            filenames = sorted(n for n, e in listing.items() if e.kind != "dir")
            yield top, dirnames, filenames
            stack.extend(f"{top}/{d}" if top else d for d in reversed(dirnames))


def _ancestors(parent: str) -> list[str]:
    """``"a/b"`` -> ``["a", "a/b"]`` (``""`` -> ``[]``)."""
    if not parent:
        return []
    parts = parent.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _parse_record(record: bytes) -> tuple[str, Entry] | None:
    """One ``ls-tree -z`` record: ``<mode> SP <type> SP <oid> TAB <path>``."""
    meta, tab, raw_path = record.partition(b"\t")
    if not tab:
        return None
    fields = meta.split()
    if len(fields) < 3:
        return None
    found = _kind_of_mode(fields[0])
    if found is None:
        return None
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        return None  # a name no build file or command can have
    return path, Entry(found.kind, found.executable, fields[2].decode("ascii", "replace"))
