"""``mosaic-orchestrator scan``: the secret scanner as a command.

Exit status: 1 when anything is found (or a blob of ``--git`` is too large to scan), 0 when clean,
2 on usage errors (one-line message). Files and stdin are read in bounded chunks; binary content
is scanned through its printable strings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import OrchestratorError
from core.git.secret_stream import CHUNK, StreamScanner
from core.git.secrets import (
    MAX_FILE_BYTES,
    Finding,
    LargeBlob,
    scan_paths,
    scan_range,
)

PROG = "mosaic-orchestrator scan"


class UsageError(Exception):
    """Bad command-line usage (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Scan files, directories, stdin ('-') or git commits for secrets.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or directories; - = stdin")
    parser.add_argument("--git", metavar="RANGE", help="scan the lines added by commits in RANGE")
    parser.add_argument("--repo", metavar="DIR", help="repository for --git (default: .)")
    parser.add_argument("--json", action="store_true", help="print findings as JSON")
    parser.add_argument(
        "--max-file-mb",
        type=int,
        default=MAX_FILE_BYTES // (1024 * 1024),
        metavar="MB",
        help="larger files are skipped; larger blobs of --git are reported (default: 10)",
    )
    return parser


def _format(finding: Finding) -> str:
    line = f"{finding.path}:{finding.line} {finding.rule} {finding.masked}"
    return line + (f" commit={finding.commit[:12]}" if finding.commit else "")


def _scan_stdin() -> list[Finding]:
    scanner = StreamScanner("-")
    while chunk := sys.stdin.read(CHUNK):
        scanner.feed(chunk.encode("utf-8", "surrogateescape"))
    return [Finding("-", h.line, h.rule, h.masked) for h in scanner.close()]


async def _run(args: argparse.Namespace) -> tuple[list[Finding], list[LargeBlob]]:
    findings: list[Finding] = []
    large: list[LargeBlob] = []
    limit = args.max_file_mb * 1024 * 1024
    if args.git:
        report = await scan_range(Path(args.repo or "."), args.git, max_blob_bytes=limit)
        findings += report.findings
        large += report.too_large
    files = [Path(p) for p in args.paths if p != "-"]
    if "-" in args.paths:
        findings += _scan_stdin()
    if files:
        findings += await scan_paths(files, max_bytes=limit)
    return findings, large


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scan command; returns the exit status."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if not args.paths and not args.git:
            raise UsageError("nothing to scan: give PATH..., '-' for stdin, or --git RANGE")
        if args.repo and not args.git:
            raise UsageError("--repo needs --git RANGE")
        if args.repo and not Path(args.repo).is_dir():
            raise UsageError(f"--repo {args.repo}: no such directory")
        missing = [p for p in args.paths if p != "-" and not Path(p).exists()]
        if missing:
            raise UsageError(f"{missing[0]}: no such file or directory")
        if args.max_file_mb < 1:
            raise UsageError("--max-file-mb must be at least 1")
        findings, large = asyncio.run(_run(args))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OrchestratorError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        payload = [
            {"path": f.path, "line": f.line, "rule": f.rule, "masked": f.masked, "commit": f.commit}
            for f in findings
        ]
        data: dict[str, object] = {"findings": payload, "count": len(payload)}
        if large:
            data["tooLarge"] = [{"path": b.path, "size": b.size, "commit": b.commit} for b in large]
        print(json.dumps(data, indent=2))
    else:
        for finding in findings:
            print(_format(finding))
        for blob in large:
            print(f"{blob.describe()} commit={blob.commit[:12]}")
    return 1 if findings or large else 0


if __name__ == "__main__":
    sys.exit(main())
