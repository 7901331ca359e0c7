"""``mosaic-orchestrator scan``: the secret scanner as a command.

Exit status: 1 when anything is found, 0 when clean, 2 on usage errors (one-line message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.errors import OrchestratorError
from core.git.secrets import Finding, scan_commits, scan_paths, scan_text

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
    return parser


def _format(finding: Finding) -> str:
    line = f"{finding.path}:{finding.line} {finding.rule} {finding.masked}"
    return line + (f" commit={finding.commit[:12]}" if finding.commit else "")


async def _run(args: argparse.Namespace) -> list[Finding]:
    findings: list[Finding] = []
    if args.git:
        findings += await scan_commits(Path(args.repo or "."), args.git)
    files = [Path(p) for p in args.paths if p != "-"]
    if "-" in args.paths:
        findings += scan_text(sys.stdin.read(), "-")
    if files:
        findings += await scan_paths(files)
    return findings


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
        findings = asyncio.run(_run(args))
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
        print(json.dumps({"findings": payload, "count": len(payload)}, indent=2))
    else:
        for finding in findings:
            print(_format(finding))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
