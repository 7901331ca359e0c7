"""Matching the secret rules in a text: hits, findings, masks.

Every finding carries a masked value only (:func:`mask`); the clear secret is never stored, logged
or reported. Inline "allow" comments (``gitleaks:allow``, ``pragma: allowlist secret``...) are
deliberately not honoured: an agent must not be able to whitelist its own leak.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import os
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from core.git.secret_rules import CODE_EXTENSIONS, RULES, Rule

log = logging.getLogger(__name__)

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_Span = tuple[int, int]


@dataclass(frozen=True)
class Finding:
    """A secret found at ``path:line`` by ``rule``; ``masked`` never contains the secret (nor does
    ``path``: a secret in a file name is masked there too)."""

    path: str
    line: int
    rule: str
    masked: str
    commit: str | None = None


class Hit(NamedTuple):
    """One accepted match in a text (offsets into it). Holds the clear secret: never leaves the
    scanner; callers keep :func:`mask` of it and a digest at most."""

    start: int
    rule: str
    secret: str
    secret_start: int
    secret_end: int


def mask(secret: str) -> str:
    """Reveal at most the first 4 characters (fewer for short secrets), then ``****``."""
    n = len(secret.strip())
    reveal = 4 if n >= 16 else 2 if n >= 10 else 0
    return secret.strip()[:reveal] + "****"


def is_code(path: str) -> bool:
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


@functools.lru_cache(maxsize=256)
def _keyword_regex(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for keywords sharing a prefix (``xox[abposre]-``): the regex engine searches
    for the literal prefix once, faster than one ``str.find`` pass per keyword."""
    prefix = os.path.commonprefix(list(keywords))  # noqa: RUF071 (strings, not paths)
    if len(keywords) < 2 or len(prefix) < 2:
        return None
    rest = sorted({k[len(prefix) :] for k in keywords}, key=len, reverse=True)
    return re.compile(re.escape(prefix) + "(?:" + "|".join(map(re.escape, rest)) + ")")


def _candidate_lines(lowered: str, lines: _Lines, keywords: tuple[str, ...]) -> list[_Span]:
    """The ``(start, end)`` of every line holding one of ``keywords``, in order."""
    regex = _keyword_regex(keywords)
    if regex is not None:
        first = regex.search(lowered)
        if first is None:
            return []
        spans: dict[int, int] = {}
        end = -1
        for m in regex.finditer(lowered, first.start()):
            if m.start() >= end:
                start, end = lines.span(m.start())
                spans[start] = end
        return sorted(spans.items())
    found = [(k, p) for k in keywords if (p := lowered.find(k)) != -1]
    if not found:  # the common case: most texts hold none of a rule's keywords
        return []
    spans = {}
    for keyword, pos in found:
        while pos != -1:
            start, end = lines.span(pos)
            spans[start] = end
            pos = lowered.find(keyword, end)
    return sorted(spans.items()) if len(found) > 1 else list(spans.items())


def _matches(
    rule: Rule, text: str, lowered: str, lines: _Lines, cache: dict[tuple[str, ...], list[_Span]]
) -> list[Hit]:
    """Each accepted match of ``rule``; ``start`` is where it begins (the secret for line rules,
    the block for multi-line ones)."""
    found: list[Hit] = []
    if rule.multiline:
        if any(k in lowered for k in rule.keywords):
            for m in rule.regex.finditer(text):
                if rule.accepts(m):
                    s, e = m.span("secret")
                    found.append(Hit(m.start(), rule.id, rule.secret(m), s, e))
        return found
    if rule.keywords not in cache:
        cache[rule.keywords] = _candidate_lines(lowered, lines, rule.keywords)
    for start, end in cache[rule.keywords]:
        for m in rule.regex.finditer(text[start:end]):
            if rule.accepts(m):
                s, e = m.span("secret")
                found.append(Hit(start + s, rule.id, rule.secret(m), start + s, start + e))
    return found


class _Taken:
    """Spans already reported, to let generic rules yield to earlier rules (O(log n) a check)."""

    def __init__(self) -> None:
        self.spans: list[_Span] = []
        self._starts: list[int] = []
        self._max_end: list[int] = []

    def add(self, start: int, end: int) -> None:
        self.spans.append((start, end))

    def freeze(self) -> None:
        self.spans.sort()
        self._starts = [s for s, _ in self.spans]
        self._max_end = list(itertools.accumulate((e for _, e in self.spans), max))

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._starts, end)
        return i > 0 and self._max_end[i - 1] > start


def find_hits(text: str, *, code: bool = False) -> list[Hit]:
    """Every secret in ``text``, in order; ``code`` (the text is source code) skips the rules
    meant for unquoted config values. Generic rules yield to earlier rules on the same span."""
    if not text:
        return []
    lowered = text.translate(_ASCII_LOWER)
    lines = _Lines(text)
    taken = _Taken()
    candidates: dict[tuple[str, ...], list[_Span]] = {}
    hits: list[Hit] = []
    for rule in RULES:  # specific rules come before the generic ones
        if rule.config_only and code:
            continue
        if rule.generic:
            taken.freeze()
        for hit in _matches(rule, text, lowered, lines, candidates):
            end = max(hit.secret_end, hit.start + 1)
            if rule.generic and taken.overlaps(hit.start, end):
                continue
            taken.add(hit.start, end)
            hits.append(hit)
    hits.sort(key=lambda h: h.start)
    return hits


def line_numbers(text: str, offsets: Iterable[int]) -> list[int]:
    """1-based line numbers of ``offsets`` in ``text``."""
    lines = _Lines(text)
    return [lines.index(pos) + 1 for pos in offsets]


def mask_text(text: str) -> str:
    """``text`` with every secret in it replaced by its mask (what may be shown or logged)."""
    hits = find_hits(text)
    if not hits:
        return text
    spans = sorted((h.secret_start, h.secret_end) for h in hits)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, pos = [], 0
    for s, e in merged:
        out += [text[pos:s], mask(text[s:e])]
        pos = e
    out.append(text[pos:])
    return "".join(out)


def mask_data(value: Any) -> Any:
    """A copy of JSON-like ``value`` (dicts, lists, strings) with every string masked."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: mask_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_data(v) for v in value]
    return value


def log_findings(findings: Iterable[Finding]) -> None:
    """Log each finding (masked) as a warning with structured fields."""
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
