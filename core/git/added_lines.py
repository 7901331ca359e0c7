"""Parse ``git log -p -U0`` output into the lines each commit added, file by file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

COMMIT_MARK = "\x00"
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")
_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    '"': '"',
    "\\": "\\",
}


@dataclass
class AddedBlock:
    """The lines ``commit`` added to ``path``, with their line numbers in the new file."""

    commit: str
    path: str
    numbers: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def unquote_path(raw: str) -> str:
    """Undo git's C-style quoting of a path (``"a\\303\\251.txt"``)."""
    if not (raw.startswith('"') and raw.endswith('"') and len(raw) >= 2):
        return raw
    body, out, i = raw[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and i + 3 < len(body) + 1:
                out.append(int(body[i + 1 : i + 4], 8) & 0xFF)
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += c.encode()
        i += 1
    return out.decode("utf-8", "replace")


def _new_path(line: str) -> str | None:
    raw = line[4:].removesuffix("\t")  # git appends a TAB to names containing spaces
    if raw == "/dev/null":
        return None
    path = unquote_path(raw)
    return path[2:] if path.startswith("b/") else path


def parse_log(output: str) -> Iterator[AddedBlock]:
    """Yield one block per (commit, file) with added lines, from ``git log -p -U0`` whose
    format line is ``%x00%H``."""
    commit = ""
    block: AddedBlock | None = None
    line_no = 0
    remaining = 0
    for line in output.split("\n"):
        if remaining > 0:
            if line.startswith("+"):
                if block is not None:
                    block.numbers.append(line_no)
                    block.lines.append(line[1:])
                line_no += 1
                remaining -= 1
                continue
            if line.startswith((" ", "-", "\\")):
                if line.startswith(" "):
                    line_no += 1
                    remaining -= 1
                continue
            remaining = 0
        if line.startswith(COMMIT_MARK):
            if block is not None and block.lines:
                yield block
            commit, block = line[1:].strip(), None
        elif line.startswith("diff --git ") or line.startswith("diff --cc "):
            if block is not None and block.lines:
                yield block
            block = None
        elif line.startswith("+++ "):
            path = _new_path(line)
            block = AddedBlock(commit, path) if path is not None else None
        elif line.startswith("@@ "):
            hunk = _HUNK.match(line)
            if hunk:
                line_no = int(hunk.group(1))
                remaining = int(hunk.group(2)) if hunk.group(2) is not None else 1
    if block is not None and block.lines:
        yield block
