"""Token usage read from Messages-API responses: a JSON message, or an SSE stream as it flows."""

from __future__ import annotations

import json
from typing import Any


def _tokens(usage: Any, key: str) -> int | None:
    if isinstance(usage, dict):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _input_total(usage: Any) -> int | None:
    """Input tokens including cache writes and reads (they all count against a budget)."""
    base = _tokens(usage, "input_tokens")
    if base is None:
        return None
    extra = (_tokens(usage, "cache_creation_input_tokens") or 0) + (
        _tokens(usage, "cache_read_input_tokens") or 0
    )
    return base + extra


class UsageMeter:
    """Input and output tokens of one response.

    ``message_start`` carries the input tokens; ``message_delta`` carries cumulative output tokens
    (and sometimes updated input tokens), so later values overwrite earlier ones. ``final`` tells
    that the response's last usage was seen (a whole message, or a stream's ``message_delta``).
    """

    MAX_PENDING = 4 * 1024 * 1024

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.seen = False
        self.final = False
        self._pending = b""

    def from_message(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        if isinstance(message, dict):
            self.final = self._apply(message.get("usage"))

    def feed(self, chunk: bytes) -> None:
        """Feed raw SSE bytes in any chunking."""
        self._pending += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self._pending:
            event, self._pending = self._pending.split(b"\n\n", 1)
            self._event(event)
        if len(self._pending) > self.MAX_PENDING:  # a malformed stream: stop buffering it
            self._pending = b""

    def _event(self, raw: bytes) -> None:
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in raw.split(b"\n") if line.startswith(b"data:")
        )
        if not data:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            self._apply(event["message"].get("usage"))
        elif event.get("type") == "message_delta":
            self.final = self._apply(event.get("usage")) or self.final

    def _apply(self, usage: Any) -> bool:
        """Take the usage's counts; whether it held output tokens."""
        inp = _input_total(usage)
        out = _tokens(usage, "output_tokens")
        if inp is not None:
            self.input_tokens = inp
            self.seen = True
        if out is not None:
            self.output_tokens = out
            self.seen = True
        return out is not None
