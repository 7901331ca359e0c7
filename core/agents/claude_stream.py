"""Claude Code's ``--output-format stream-json`` output, parsed (see ``claude_code`` for what the
CLI prints): tool calls become :class:`Activity` (name and a short, masked summary of the input),
the ``system/init`` line gives the session id, the ``result`` line a :class:`ClaudeResult`.

Feed it whole lines (:meth:`StreamParser.feed`) or raw chunks of the log as they arrive
(:meth:`StreamParser.feed_bytes`, then :meth:`StreamParser.flush` at the end); nothing it is fed
makes it raise. A line longer than ``MAX_LINE_BYTES`` (e.g. a huge tool result) is skipped
without being kept in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from core.agents.results import RuntimeResult, Verdict
from core.git.secrets import mask_text
from core.models import Usage

SUMMARY_MAX = 200
MAX_LINE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Activity:
    """One tool call: its name and a short, masked summary of its input."""

    tool: str
    summary: str


@dataclass
class ClaudeResult:
    """The final ``result`` line. ``usage.input_tokens`` counts cache reads and writes too
    (also given apart); ``usage.cost_usd`` is the CLI's own estimate."""

    summary: str
    turns: int
    usage: Usage
    cost_usd: float
    is_error: bool
    error: str | None
    subtype: str = ""
    session_id: str | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    budget: Literal["turns", "tokens"] | None = None
    """``turns``: ``--max-turns`` reached; ``tokens``: the gateway refused with 402 (the agent's
    token budget is spent)."""
    api_error_status: int | None = None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _short(text: str) -> str:
    text = mask_text(" ".join(text.split()))
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 3] + "..."


_PATH_KEYS = ("file_path", "notebook_path", "path")
_TEXT_KEYS = ("command", "pattern", "url", "query", "description", "prompt", "skill")


@dataclass
class StreamParser:
    """Feed it Claude Code's stdout line by line; it never raises on what it is fed."""

    cwd: str | None = None
    """The agent's working directory (paths in summaries are shown relative to it); the
    ``system/init`` line's ``cwd`` replaces it."""
    session_id: str | None = None
    result: ClaudeResult | None = None
    last_text: str = ""
    garbage: int = 0
    """Lines that were not a JSON object of the stream (or too long to read)."""
    retries: int = 0
    """``system/api_retry`` lines: the CLI retrying a 429/529/5xx itself (up to 10 times,
    honouring ``retry-after``)."""
    _seen: set[str] = field(default_factory=set, repr=False)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _skipping: bool = field(default=False, repr=False)

    def feed_bytes(self, data: bytes) -> list[Activity]:
        """Raw output as it arrives, split anywhere: every line it completes is parsed."""
        activities: list[Activity] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            piece = data[start:end]
            start = end + 1
            if self._skipping or len(self._buffer) + len(piece) > MAX_LINE_BYTES:
                self._skipping = False
                self._buffer.clear()
                self.garbage += 1
                continue
            self._buffer += piece
            line = self._buffer.decode("utf-8", "replace")
            self._buffer.clear()
            activities += self.feed(line)
        rest = data[start:]
        if not self._skipping:
            if len(self._buffer) + len(rest) > MAX_LINE_BYTES:
                self._buffer.clear()
                self._skipping = True  # drop the rest of this line as it comes
            else:
                self._buffer += rest
        return activities

    def flush(self) -> list[Activity]:
        """At the end of the output: parse a last line that had no newline."""
        if self._skipping:
            self._skipping = False
            self.garbage += 1
            return []
        line = self._buffer.decode("utf-8", "replace")
        self._buffer.clear()
        return self.feed(line) if line else []

    def feed(self, line: str) -> list[Activity]:
        try:
            data = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            if line.strip():
                self.garbage += 1
            return []
        if not isinstance(data, dict):
            self.garbage += 1
            return []
        try:
            return self._message(data)
        except (ValueError, TypeError, KeyError, AttributeError):
            self.garbage += 1
            return []

    def _message(self, data: dict[str, Any]) -> list[Activity]:
        kind = data.get("type")
        if isinstance(data.get("session_id"), str) and self.session_id is None:
            self.session_id = data["session_id"]
        if kind == "system" and data.get("subtype") == "api_retry":
            self.retries += 1
            return []
        if kind == "system" and data.get("subtype") == "init":
            if isinstance(data.get("session_id"), str):
                self.session_id = data["session_id"]
            if isinstance(data.get("cwd"), str):
                self.cwd = data["cwd"]
            return []
        if kind == "result":
            self.result = self._result(data)
            return []
        if kind != "assistant":
            return []
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        activities: list[Activity] = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                if block["text"].strip():
                    self.last_text = block["text"]
            elif block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                ident = block.get("id")
                if isinstance(ident, str):
                    if ident in self._seen:
                        continue
                    self._seen.add(ident)
                tool_input = block.get("input")
                args = tool_input if isinstance(tool_input, dict) else {}
                activities.append(Activity(_short(block["name"]), self.summarize(args)))
        return activities

    def summarize(self, args: dict[str, Any]) -> str:
        """The input's gist: a path (relative to the cwd), else a command, pattern, url..."""
        for key in _PATH_KEYS:
            value = args.get(key)
            if isinstance(value, str) and value:
                return _short(self._relative(value))
        for key in _TEXT_KEYS:
            value = args.get(key)
            if isinstance(value, str) and value:
                return _short(value)
        return _short(json.dumps(args, ensure_ascii=False, sort_keys=True)) if args else ""

    def _relative(self, path: str) -> str:
        if self.cwd and os.path.isabs(path):
            rel = os.path.relpath(os.path.normpath(path), os.path.normpath(self.cwd))
            if rel != ".." and not rel.startswith("../"):
                return rel
        return path

    def _result(self, data: dict[str, Any]) -> ClaudeResult:
        raw = data.get("usage")
        raw_usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
        cache_read = _int(raw_usage.get("cache_read_input_tokens"))
        cache_write = _int(raw_usage.get("cache_creation_input_tokens"))
        cost = data.get("total_cost_usd")
        cost_usd = float(cost) if isinstance(cost, int | float) and cost > 0 else 0.0
        turns = _int(data.get("num_turns"))
        usage = Usage(
            input_tokens=_int(raw_usage.get("input_tokens")) + cache_read + cache_write,
            output_tokens=_int(raw_usage.get("output_tokens")),
            cost_usd=cost_usd,
            turns=turns,
        )
        final = data.get("result")
        text = final if isinstance(final, str) else ""
        subtype = str(data.get("subtype") or "")
        raw_status = data.get("api_error_status")
        status = (
            raw_status if isinstance(raw_status, int) and not isinstance(raw_status, bool) else None
        )
        is_error = bool(data.get("is_error")) or subtype.startswith("error")
        error = None
        if is_error:
            errors = data.get("errors")
            named = [str(e) for e in errors if e] if isinstance(errors, list) else []
            error = mask_text("; ".join(named) or text or subtype or "Claude Code failed")
        return ClaudeResult(
            summary=mask_text(text),
            turns=turns,
            usage=usage,
            cost_usd=cost_usd,
            is_error=is_error,
            error=error,
            subtype=subtype,
            session_id=data["session_id"] if isinstance(data.get("session_id"), str) else None,
            cache_read_input_tokens=cache_read,
            cache_creation_input_tokens=cache_write,
            budget="turns" if subtype == "error_max_turns" else "tokens" if status == 402 else None,
            api_error_status=status,
        )

    def verdict(self) -> Verdict | None:
        """A reviewer's verdict (``VERDICT: approve|request_changes`` and ``- `` comments) in
        the final text, parsed exactly as the builtin runtime parses its own; None without."""
        from core.agents.runtime import parse_verdict  # the builtin's parser, one definition

        text = self.result.summary if self.result is not None else ""
        parsed = parse_verdict(text) if text else None
        return Verdict.model_validate(parsed) if parsed else None

    def runtime_result(self, role: str) -> RuntimeResult:
        """The run as the builtin runtime reports one (``core.agents.results``), so the finish
        stage treats both alike; no ``result`` line (killed, crashed) is a failure."""
        result = self.result
        if result is None:
            return RuntimeResult(
                status="failed",
                summary=mask_text(self.last_text),
                error="Claude Code ended without a result",
            )
        failed = result.is_error
        return RuntimeResult(
            status="failed" if failed else "completed",
            summary=result.summary,
            verdict=self.verdict() if role == "reviewer" and not failed else None,
            usage=result.usage,
            error=result.error,
            budget=result.budget,
        )
