"""Scanning a stream of bytes for secrets in bounded memory.

A blob or file is fed in chunks; the scanner holds one window of at most ``WINDOW + OVERLAP``
bytes (plus the chunk being added). Consecutive windows overlap by ``OVERLAP`` bytes, more than
the longest match a rule reports (a private-key block, ~16 KB), and each window reports only the
hits that start before its cut, so a secret that spans a chunk boundary is found once, in the
window where it starts. Cuts fall on line starts; a line longer than the overlap is cut in the
middle, with ``CONTEXT`` bytes carried before the cut so boundaries and key names still match.

The bytes alone decide how a window is read (never the repository's attributes): a window without
NUL bytes is UTF-8 text; a window with NUL bytes is binary and is read through its printable
strings (like ``strings``: every byte outside printable ASCII ends a line), and through the
printable strings of its even and of its odd bytes (ASCII text stored as UTF-16). Line numbers
count the stream's real newlines either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from core.git.secret_match import Hit, find_hits, is_code, line_numbers, mask

WINDOW = 1 << 20
OVERLAP = 64 << 10
CONTEXT = 512
CHUNK = 1 << 20

_PRINTABLE = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A}
_STRINGS = bytes(b if b in _PRINTABLE else 0x0A for b in range(256))
"""Byte translation of the binary view: printable ASCII stays, every other byte ends a line."""


@dataclass(frozen=True)
class StreamHit:
    """A secret found in a stream: where, by which rule, masked, and a digest of (rule, secret)
    that lets a caller tell a new secret from one already present elsewhere."""

    line: int
    rule: str
    masked: str
    digest: bytes
    offset: int


def digest(rule: str, secret: str) -> bytes:
    return hashlib.blake2b(f"{rule}\0{secret}".encode(), digest_size=16).digest()


def read_chunks(fh: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk


class StreamScanner:
    """Feed bytes with :meth:`feed`, then :meth:`close` to get every hit, in stream order."""

    def __init__(self, name: str = "-", *, code: bool | None = None) -> None:
        self._code = is_code(name) if code is None else code
        self._buf = bytearray()
        self._skip = 0  # hits starting before this offset of the buffer were reported already
        self._offset = 0  # stream offset of the buffer's first byte
        self._lines = 0  # newlines in the stream before the buffer
        self._hits: list[StreamHit] = []
        self.size = 0
        self.binary = False

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self._buf += data
        while len(self._buf) >= WINDOW + OVERLAP:
            self._window(final=False)

    def close(self) -> list[StreamHit]:
        if self._buf or self._skip:
            self._window(final=True)
        self._buf = bytearray()
        seen: set[tuple[int, bytes]] = set()
        unique = []
        for hit in sorted(self._hits, key=lambda h: (h.offset, h.rule)):
            if (hit.offset, hit.digest) not in seen:
                seen.add((hit.offset, hit.digest))
                unique.append(hit)
        return unique

    def _cut(self, raw: bytes) -> tuple[int, int]:
        """Where this window's reports end, and where the next window starts."""
        target = len(raw) - OVERLAP  # == WINDOW: cuts do not depend on how the stream is chunked
        newline = raw.rfind(b"\n", max(self._skip, target - OVERLAP), target)
        if newline >= 0:
            return newline + 1, newline + 1
        cut = target
        while cut > self._skip and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        return cut, max(0, cut - CONTEXT)

    def _window(self, *, final: bool) -> None:
        raw = bytes(self._buf if final else self._buf[: WINDOW + OVERLAP])
        cut, nxt = (len(raw), len(raw)) if final else self._cut(raw)
        if b"\0" in raw:
            self.binary = True
            self._binary(raw, cut)
        else:
            self._text(raw, cut)
        self._lines += raw.count(b"\n", 0, nxt)
        self._offset += nxt
        self._skip = cut - nxt
        del self._buf[:nxt]

    def _keep(self, hits: list[Hit], offsets: list[int], lines: list[int]) -> None:
        for hit, offset, line in zip(hits, offsets, lines, strict=True):
            self._hits.append(
                StreamHit(
                    self._lines + line,
                    hit.rule,
                    mask(hit.secret),
                    digest(hit.rule, hit.secret),
                    self._offset + offset,
                )
            )

    def _text(self, raw: bytes, cut: int) -> None:
        ascii_only = raw.isascii()
        if ascii_only:
            text, lo, hi = raw.decode("ascii"), self._skip, cut
        else:  # decode the three parts apart so the cut's character offset is known
            head = raw[: self._skip].decode("utf-8", "replace")
            mid = raw[self._skip : cut].decode("utf-8", "replace")
            text = head + mid + raw[cut:].decode("utf-8", "replace")
            lo, hi = len(head), len(head) + len(mid)
        hits = [h for h in find_hits(text, code=self._code) if lo <= h.start < hi]
        if hits:
            starts = [h.start for h in hits]
            offsets = starts if ascii_only else _byte_offsets(text, starts)
            self._keep(hits, offsets, line_numbers(text, starts))

    def _binary(self, raw: bytes, cut: int) -> None:
        view = raw.translate(_STRINGS).decode("ascii")
        hits = [h for h in find_hits(view, code=False) if self._skip <= h.start < cut]
        if hits:
            starts = [h.start for h in hits]
            self._keep(hits, starts, _raw_lines(raw, starts))
        for parity in (0, 1):  # ASCII stored as UTF-16 (either byte order, either alignment)
            half = raw[parity::2].translate(_STRINGS).decode("ascii")
            found = [
                h for h in find_hits(half, code=False) if self._skip <= 2 * h.start + parity < cut
            ]
            if found:
                offsets = [2 * h.start + parity for h in found]
                self._keep(found, offsets, _raw_lines(raw, offsets))


def _raw_lines(raw: bytes, offsets: list[int]) -> list[int]:
    """1-based line numbers of sorted byte ``offsets``, counting the real newlines of ``raw``."""
    lines, line, pos = [], 1, 0
    for offset in offsets:
        line += raw.count(b"\n", pos, offset)
        pos = offset
        lines.append(line)
    return lines


def _byte_offsets(text: str, starts: list[int]) -> list[int]:
    """UTF-8 offsets of sorted character offsets (the order of hits, not exact bytes)."""
    offsets, offset, pos = [], 0, 0
    for start in starts:
        offset += len(text[pos:start].encode("utf-8", "surrogatepass"))
        pos = start
        offsets.append(offset)
    return offsets
