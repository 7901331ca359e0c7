"""Secret scanner: finds credentials in text, files and the added lines of commits.

Every finding carries a masked value only (:func:`mask`); the clear secret is never stored, logged
or reported. Inline "allow" comments (``gitleaks:allow``, ``pragma: allowlist secret``...) are
deliberately not honoured: an agent must not be able to whitelist its own leak.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.git.added_lines import parse_log
from core.git.errors import ScanError
from core.git.runner import run_git_bytes, tail
from core.git.secret_rules import CODE_EXTENSIONS, RULES, Rule
from core.git.worktrees import Worktree, admin_dir

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 5 * 1024 * 1024
_BINARY_SNIFF = 8192
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True)
class Finding:
    """A secret found at ``path:line`` by ``rule``; ``masked`` never contains the secret."""

    path: str
    line: int
    rule: str
    masked: str
    commit: str | None = None


def mask(secret: str) -> str:
    """Reveal at most the first 4 characters (fewer for short secrets), then ``****``."""
    n = len(secret.strip())
    reveal = 4 if n >= 16 else 2 if n >= 10 else 0
    return secret.strip()[:reveal] + "****"


def _is_code(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in CODE_EXTENSIONS


class _Lines:
    """Maps offsets in a text to (0-based) line indexes and line spans, lazily."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None

    def span(self, pos: int) -> tuple[int, int]:
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        return start, len(self.text) if end == -1 else end

    def index(self, pos: int) -> int:
        if self._starts is None:
            self._starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        return bisect.bisect_right(self._starts, pos) - 1


def _candidate_lines(lowered: str, lines: _Lines, keywords: Sequence[str]) -> list[int]:
    starts: set[int] = set()
    for keyword in keywords:
        pos = lowered.find(keyword)
        while pos != -1:
            start, end = lines.span(pos)
            starts.add(start)
            pos = lowered.find(keyword, end)
    return sorted(starts)


def _matches(
    rule: Rule, text: str, lowered: str, lines: _Lines, cache: dict[tuple[str, ...], list[int]]
) -> list[tuple[int, int, str]]:
    """``(start, end, secret)`` of each accepted match of ``rule`` (offsets into ``text``)."""
    found: list[tuple[int, int, str]] = []
    if rule.multiline:
        if any(k in lowered for k in rule.keywords):
            for m in rule.regex.finditer(text):
                if rule.accepts(m):
                    found.append((m.start(), m.end(), rule.secret(m)))
        return found
    if rule.keywords not in cache:
        cache[rule.keywords] = _candidate_lines(lowered, lines, rule.keywords)
    for start in cache[rule.keywords]:
        _, end = lines.span(start)
        for m in rule.regex.finditer(text[start:end]):
            if rule.accepts(m):
                found.append((start + m.start("secret"), start + m.end("secret"), rule.secret(m)))
    return found


def _scan(
    text: str,
    path: str,
    *,
    line_numbers: Sequence[int] | None = None,
    commit: str | None = None,
) -> list[Finding]:
    if not text:
        return []
    lowered = text.translate(_ASCII_LOWER)
    lines = _Lines(text)
    code = _is_code(path)
    taken: list[tuple[int, int]] = []
    candidates: dict[tuple[str, ...], list[int]] = {}
    findings: list[tuple[int, Finding]] = []
    for rule in RULES:  # specific rules come before the generic ones
        if rule.config_only and code:
            continue
        for start, end, secret in _matches(rule, text, lowered, lines, candidates):
            if rule.generic and any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            index = lines.index(start)
            number = line_numbers[index] if line_numbers is not None else index + 1
            findings.append((start, Finding(path, number, rule.id, mask(secret), commit)))
    findings.sort(key=lambda item: (item[1].line, item[0]))
    return [f for _, f in findings]


def scan_text(text: str, path: str = "-") -> list[Finding]:
    """Scan ``text`` (the content of ``path``, which selects code vs config heuristics)."""
    return _scan(text, path)


# -- files ---------------------------------------------------------------------------------------


def _read_text(path: Path, max_bytes: int) -> str | None:
    try:
        if path.stat().st_size > max_bytes:
            log.info("skipping large file", extra={"path": str(path)})
            return None
        data = path.read_bytes()
    except OSError as exc:
        log.warning("cannot read file", extra={"path": str(path), "error": exc.strerror})
        return None
    if b"\0" in data[:_BINARY_SNIFF]:
        return None
    return data.decode("utf-8", "replace")


def _iter_files(root: Path) -> list[Path]:
    if root.is_symlink():
        return []
    if root.is_file():
        return [root]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            candidate = Path(dirpath) / name
            if not candidate.is_symlink() and candidate.is_file():
                files.append(candidate)
    return files


def _scan_paths_sync(paths: list[Path], max_bytes: int) -> list[Finding]:
    findings: list[Finding] = []
    for root in paths:
        if not root.exists():
            raise ScanError(f"cannot scan {root}: no such file or directory")
        for file in _iter_files(root):
            text = _read_text(file, max_bytes)
            if text is not None:
                findings.extend(_scan(text, str(file)))
    return findings


async def scan_paths(paths: list[Path], *, max_bytes: int = MAX_FILE_BYTES) -> list[Finding]:
    """Scan files or directories (recursively; skips ``.git``, symlinks, binaries, huge files)."""
    findings = await asyncio.to_thread(_scan_paths_sync, [Path(p) for p in paths], max_bytes)
    _log_findings(findings)
    return findings


def _log_findings(findings: list[Finding]) -> None:
    for f in findings:
        log.warning(
            "secret detected",
            extra={
                "path": f.path,
                "line": f.line,
                "rule": f.rule,
                "masked": f.masked,
                "commit": f.commit,
            },
        )


# -- commits -------------------------------------------------------------------------------------


def _scan_log(output: str) -> list[Finding]:
    findings: list[Finding] = []
    for block in parse_log(output):
        findings.extend(
            _scan(block.text, block.path, line_numbers=block.numbers, commit=block.commit)
        )
    return findings


async def scan_commits(repo: Path | Worktree, rev_range: str) -> list[Finding]:
    """Scan the lines added by every commit in ``rev_range`` (e.g. ``base..HEAD``).

    Each commit's own diff is scanned, so a secret added and removed later is still found.
    Pass the :class:`Worktree` rather than its path when the checkout is untrusted: its git dir is
    then taken from the cache, not from the worktree's ``.git`` file.
    """
    if not rev_range or rev_range.startswith("-") or any(c in rev_range for c in "\0\n "):
        raise ScanError(f"invalid revision range {rev_range!r}")
    if isinstance(repo, Worktree):
        where = {"git_dir": admin_dir(repo), "cwd": repo.path}
    else:
        where = {"cwd": Path(repo)}
    args = (
        "log",
        "-p",
        "-U0",
        "--reverse",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--diff-merges=first-parent",
        "--find-renames",
        "--format=%x00%H",
        "--end-of-options",
        rev_range,
        "--",
    )
    code, out, err = await run_git_bytes(*args, **where)  # type: ignore[arg-type]
    if code != 0:
        raise ScanError(
            f"cannot read commits {rev_range!r}: {tail(err.decode('utf-8', 'replace'))}",
            returncode=code,
        )
    findings = await asyncio.to_thread(_scan_log, out.decode("utf-8", "replace"))
    _log_findings(findings)
    return findings
