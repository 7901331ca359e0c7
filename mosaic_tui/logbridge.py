"""While the dashboard owns the terminal, log records go to a file and warnings to the screen.

A stream handler writing to stderr would scribble over the screen; ``capture`` swaps such handlers
for a file handler plus a thread-safe buffer that the app drains into its events pane.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

_TERMINAL_STREAMS = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


class _Buffer(logging.Handler):
    def __init__(self, sink: deque[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.append(self.format(record))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class LogBridge:
    def __init__(self) -> None:
        self.pending: deque[str] = deque(maxlen=1000)

    def drain(self) -> list[str]:
        lines = list(self.pending)
        self.pending.clear()
        return lines

    @contextlib.contextmanager
    def capture(self, log_file: Path) -> Iterator[None]:
        root = logging.getLogger()
        terminal = [
            h
            for h in root.handlers
            if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler)
            and getattr(h, "stream", None) in _TERMINAL_STREAMS
        ]
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_screen = _Buffer(self.pending)
        for handler in terminal:
            root.removeHandler(handler)
        root.addHandler(to_file)
        root.addHandler(to_screen)
        try:
            yield
        finally:
            root.removeHandler(to_screen)
            root.removeHandler(to_file)
            to_file.close()
            for handler in terminal:
                root.addHandler(handler)
