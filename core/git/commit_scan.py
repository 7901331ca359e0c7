"""The secret scan of the commits to be pushed: what an agent adds cannot go around it.

For every commit of the range (a merge against its first parent, so whatever it brings counts):

- every added or changed blob, text or binary, read raw with ``git cat-file`` and never through
  ``git diff`` (whose textconv, filters and ``-diff`` attributes the repository controls);
  a changed blob reports only the secrets that its previous version at that path (or its rename
  source) did not already hold, so a secret already in the base and left untouched does not block,
  while one added, moved to another file or rewritten anywhere in the file does;
- every added or renamed path (a token used as a file name);
- the commit object itself: its message, author and committer.

Callers add texts of their own (the agent's summary). Blobs are streamed in bounded windows
(:mod:`core.git.secret_stream`), so memory does not grow with their size. A blob or commit larger
than ``max_blob_bytes`` is not read: it is listed in the report and blocks like a finding.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.git.errors import ScanError
from core.git.git_objects import (
    GITLINK,
    Change,
    ObjectReader,
    Where,
    first_parent_commits,
    tree_changes,
)
from core.git.secret_match import (
    Finding,
    find_hits,
    is_code,
    line_numbers,
    log_findings,
    mask,
    mask_text,
)
from core.git.secret_stream import StreamHit, StreamScanner
from core.git.worktrees import Worktree, admin_dir

log = logging.getLogger(__name__)

MAX_BLOB_BYTES = 10 * 1024 * 1024
COMMIT_MESSAGE = "(commit message)"
COMMIT_HEADER = "(commit header)"
_MB = 1024 * 1024
_HEADER_MAX = 1 << 16


@dataclass(frozen=True)
class LargeBlob:
    """An added or changed blob (or a commit) too large to scan; ``path`` is masked."""

    path: str
    size: int
    limit: int
    commit: str

    def describe(self) -> str:
        return (
            f"{self.path} is larger than {self.limit / _MB:g} MB ({self.size / _MB:.1f} MB; "
            "SCAN_MAX_FILE_MB), so it cannot be scanned"
        )


@dataclass
class ScanReport:
    """Everything the scan of a commit range found; the push is blocked unless :attr:`clean`."""

    findings: list[Finding] = field(default_factory=list)
    too_large: list[LargeBlob] = field(default_factory=list)
    commits: int = 0
    blobs: int = 0
    bytes: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings and not self.too_large

    def reason(self) -> str:
        """Why the push is blocked (nothing in it is a secret), or ``""`` when clean."""
        parts: list[str] = []
        if self.too_large:
            more = len(self.too_large) - 1
            parts.append(self.too_large[0].describe() + (f" (and {more} more)" if more else ""))
        if self.findings:
            rules = ", ".join(sorted({f.rule for f in self.findings}))
            paths = list(dict.fromkeys(f.path for f in self.findings))
            where = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            parts.append(f"{len(self.findings)} secret(s) found ({rules}) in {where}")
        return "; ".join(parts) + "; push blocked" if parts else ""


class _Scan:
    """One scan, in a worker thread. Changes are handled in batches (their objects' sizes asked
    at once, their contents read in one pipelined pass); a blob's results are kept by id, so a blob
    met again, at another commit or path, is not read again."""

    BATCH = 256

    def __init__(self, objects: ObjectReader, limit: int, report: ScanReport) -> None:
        self.objects = objects
        self.limit = limit
        self.report = report
        self._hits: dict[tuple[str, bool], list[StreamHit]] = {}
        self._size: dict[str, int | None] = {}  # None: the repository does not have it
        self._shown: dict[str, str] = {}

    def shown(self, path: str) -> str:
        if path not in self._shown:
            self._shown[path] = mask_text(path)
        return self._shown[path]

    def _scan_blobs(self, wanted: dict[str, set[bool]]) -> None:
        """Read each blob once and scan it as code and/or as config, as its paths need."""
        scanners: dict[bool, StreamScanner] = {}

        def begin(oid: str) -> Callable[[bytes], None]:
            scanners.clear()
            for code in wanted[oid]:
                scanners[code] = StreamScanner(code=code)

            def feed(data: bytes) -> None:
                for scanner in scanners.values():
                    scanner.feed(data)

            return feed

        def end(oid: str, size: int) -> None:
            self.report.blobs += 1
            self.report.bytes += size
            for code, scanner in scanners.items():
                self._hits[(oid, code)] = scanner.close()

        self.objects.read_each(list(wanted), begin, end)

    def commits(self, shas: list[str]) -> None:
        infos = self.objects.infos(shas)
        readable = []
        for sha in shas:
            info = infos[sha]
            if info is None:
                raise ScanError(f"cannot read commit {sha}: missing")
            if info[1] > self.limit:
                self.report.too_large.append(
                    LargeBlob(f"commit {sha[:12]}", info[1], self.limit, sha)
                )
            else:
                readable.append(sha)
        scanner = StreamScanner(COMMIT_MESSAGE)
        head = bytearray()  # the object's start, to find where its headers end

        def begin(sha: str) -> Callable[[bytes], None]:
            nonlocal scanner
            scanner, head[:] = StreamScanner(COMMIT_MESSAGE), b""
            return feed

        def feed(data: bytes) -> None:
            if len(head) < _HEADER_MAX and b"\n\n" not in head:
                head.extend(data[:_HEADER_MAX])
            scanner.feed(data)

        def end(sha: str, size: int) -> None:
            self.report.bytes += size
            stop = head.find(b"\n\n")
            header_lines = head.count(b"\n", 0, stop) + 1 if stop >= 0 else None
            for hit in scanner.close():
                if header_lines is not None and hit.line > header_lines + 1:
                    line, where = hit.line - header_lines - 1, COMMIT_MESSAGE
                else:
                    line, where = hit.line, COMMIT_HEADER
                self.report.findings.append(Finding(where, line, hit.rule, hit.masked, sha))

        self.objects.read_each(readable, begin, end)

    def changes(self, changes: list[Change]) -> None:
        changes = [c for c in changes if c.status != "D"]
        named = self._path_hits([c for c in changes if c.status in "ARC"])
        # a submodule's commit is not in this repository; an unchanged blob is not new content
        content = {c for c in changes if c.new_mode != GITLINK and c.new_oid != c.old_oid}
        earlier = {
            c: c.old_oid
            for c in content
            if c.status in "MRCT" and c.old_mode != GITLINK and set(c.old_oid) != {"0"}
        }
        oids = [c.new_oid for c in content] + list(earlier.values())
        unknown = list(dict.fromkeys(o for o in oids if o not in self._size))
        for oid, info in self.objects.infos(unknown).items():
            self._size[oid] = info[1] if info is not None else None
        wanted: dict[str, set[bool]] = {}
        for c in content:
            code = is_code(c.path)
            for oid in (c.new_oid, earlier.get(c, "")):
                size = self._size.get(oid)
                if size is not None and size <= self.limit and (oid, code) not in self._hits:
                    wanted.setdefault(oid, set()).add(code)
        self._scan_blobs(wanted)
        for c in changes:
            self.report.findings += named.get(c, [])
            if c not in content:
                continue
            size = self._size[c.new_oid]
            if size is None:
                raise ScanError(f"cannot read {self.shown(c.path)} at {c.commit[:12]}: missing")
            if size > self.limit:
                self.report.too_large.append(
                    LargeBlob(self.shown(c.path), size, self.limit, c.commit)
                )
            else:
                self._new_secrets(c, earlier.get(c))

    def _new_secrets(self, change: Change, earlier: str | None) -> None:
        """The secrets of the new blob that its earlier version (read if not too large) lacked."""
        code = is_code(change.path)
        old = self._hits.get((earlier, code), []) if earlier is not None else []
        known = {h.digest for h in old}
        for hit in self._hits[(change.new_oid, code)]:
            if hit.digest not in known:
                self.report.findings.append(
                    Finding(self.shown(change.path), hit.line, hit.rule, hit.masked, change.commit)
                )

    def _path_hits(self, changes: list[Change]) -> dict[Change, list[Finding]]:
        """Findings in new paths, all of a batch scanned as one text (one path a line)."""
        found: dict[Change, list[Finding]] = {}
        if not changes:
            return found
        text = "\n".join(c.path.replace("\n", " ") for c in changes)
        hits = find_hits(text)
        for hit, line in zip(hits, line_numbers(text, (h.start for h in hits)), strict=True):
            c = changes[line - 1]
            finding = Finding(self.shown(c.path), 0, hit.rule, mask(hit.secret), c.commit)
            found.setdefault(c, []).append(finding)
        return found


def scan_texts(texts: Mapping[str, str]) -> list[Finding]:
    """Findings in texts that are not files (``{label: text}``; e.g. the agent's summary)."""
    findings: list[Finding] = []
    for label, text in texts.items():
        hits = find_hits(text)
        numbers = line_numbers(text, (h.start for h in hits))
        findings += [
            Finding(label, n, h.rule, mask(h.secret)) for h, n in zip(hits, numbers, strict=True)
        ]
    return findings


def _where(repo: Path | Worktree) -> Where:
    if isinstance(repo, Worktree):
        admin = admin_dir(repo)  # never the worktree's own .git file, which the agent controls
        return Where(cwd=admin, git_dir=admin)
    return Where(cwd=Path(repo))


def _scan_sync(
    repo: Path | Worktree, rev_range: str, limit: int, cancel: threading.Event
) -> ScanReport:
    where = _where(repo)
    report = ScanReport()
    commits = first_parent_commits(where, rev_range)
    report.commits = len(commits)
    with ObjectReader(where, cancel) as objects:
        scan = _Scan(objects, limit, report)
        scan.commits([sha for sha, _ in commits])
        batch: list[Change] = []
        for change in tree_changes(where, commits, cancel):
            batch.append(change)
            if len(batch) == scan.BATCH:
                scan.changes(batch)
                batch = []
        scan.changes(batch)
    return report


def _check_range(rev_range: str) -> None:
    if not rev_range or rev_range.startswith("-") or any(c in rev_range for c in "\0\n "):
        raise ScanError(f"invalid revision range {rev_range!r}")


async def scan_range(
    repo: Path | Worktree,
    rev_range: str,
    *,
    max_blob_bytes: int = MAX_BLOB_BYTES,
    texts: Mapping[str, str] | None = None,
) -> ScanReport:
    """Scan every commit of ``rev_range`` (e.g. ``base..HEAD``) and ``texts``; see the module.

    Pass the :class:`Worktree` rather than its path when the checkout is untrusted: its git dir is
    then taken from the cache, not from the worktree's ``.git`` file. Runs in a worker thread; if
    the caller is cancelled, the thread stops at its next chunk and its git processes are killed.
    """
    _check_range(rev_range)
    cancel = threading.Event()
    try:
        report = await asyncio.to_thread(_scan_sync, repo, rev_range, max_blob_bytes, cancel)
    finally:
        cancel.set()
    report.findings[:0] = scan_texts(texts or {})
    log_findings(report.findings)
    for blob in report.too_large:
        log.warning("blob too large to scan", extra={"path": blob.path, "size": blob.size})
    return report


async def scan_commits(
    repo: Path | Worktree, rev_range: str, *, max_blob_bytes: int = MAX_BLOB_BYTES
) -> list[Finding]:
    """The findings of :func:`scan_range`; a blob too large to scan raises :class:`ScanError`."""
    report = await scan_range(repo, rev_range, max_blob_bytes=max_blob_bytes)
    if report.too_large:
        raise ScanError(report.too_large[0].describe())
    return report.findings
