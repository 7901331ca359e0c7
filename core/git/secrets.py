"""Secret scanner: finds credentials in text, files and the commits to be pushed.

Every finding carries a masked value only; the clear secret is never stored, logged or reported,
and :func:`mask_text` masks any text before it is shown. The parts:

- :mod:`core.git.secret_rules` and :mod:`core.git.secret_guards`: the rules and their heuristics;
- :mod:`core.git.secret_match`: matching the rules in a text, masking;
- :mod:`core.git.secret_stream`: scanning a stream in bounded windows (binary data through its
  printable strings);
- :mod:`core.git.commit_scan`: every added or changed blob, path and message of a commit range.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from core.git.commit_scan import LargeBlob, ScanReport, scan_commits, scan_range
from core.git.errors import ScanError
from core.git.secret_match import (
    Finding,
    find_hits,
    is_code,
    line_numbers,
    log_findings,
    mask,
    mask_data,
    mask_text,
)
from core.git.secret_stream import StreamScanner, read_chunks

__all__ = [
    "MAX_FILE_BYTES",
    "Finding",
    "LargeBlob",
    "ScanReport",
    "mask",
    "mask_data",
    "mask_text",
    "scan_commits",
    "scan_paths",
    "scan_range",
    "scan_text",
]

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 10 * 1024 * 1024


def scan_text(text: str, path: str = "-") -> list[Finding]:
    """Scan ``text`` (the content of ``path``, which selects code vs config heuristics)."""
    hits = find_hits(text, code=is_code(path))
    numbers = line_numbers(text, (h.start for h in hits))
    shown = mask_text(path)
    return [Finding(shown, n, h.rule, mask(h.secret)) for h, n in zip(hits, numbers, strict=True)]


# -- files ---------------------------------------------------------------------------------------


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


def _scan_file(file: Path, max_bytes: int) -> list[Finding]:
    shown = mask_text(str(file))
    try:
        if file.stat().st_size > max_bytes:
            log.warning("file too large to scan", extra={"path": shown})
            return []
        scanner = StreamScanner(str(file))
        with file.open("rb") as fh:
            for chunk in read_chunks(fh):
                scanner.feed(chunk)
    except OSError as exc:
        log.warning("cannot read file", extra={"path": shown, "error": exc.strerror})
        return []
    return [Finding(shown, h.line, h.rule, h.masked) for h in scanner.close()]


def _scan_paths_sync(paths: list[Path], max_bytes: int) -> list[Finding]:
    findings: list[Finding] = []
    for root in paths:
        if not root.exists():
            raise ScanError(f"cannot scan {mask_text(str(root))}: no such file or directory")
        for file in _iter_files(root):
            findings.extend(_scan_file(file, max_bytes))
    return findings


async def scan_paths(paths: list[Path], *, max_bytes: int = MAX_FILE_BYTES) -> list[Finding]:
    """Scan files or directories, recursively. Skips ``.git``, symlinks and files larger than
    ``max_bytes`` (with a warning); reads files in bounded chunks, binary ones through their
    printable strings."""
    findings = await asyncio.to_thread(_scan_paths_sync, [Path(p) for p in paths], max_bytes)
    log_findings(findings)
    return findings
