"""Follows the engine's event stream for the dashboard, buffering events between screen refreshes.

The feed never holds the screen up: it only appends to a buffer that the app drains on a timer.
When the stream ends or the subscriber lags behind, it reconnects from the last id it saw, so
no event is lost while the stream still holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from core.engine_api import EngineAPI
from core.errors import OrchestratorError
from core.models import Event

log = logging.getLogger(__name__)


class EventFeed:
    def __init__(
        self,
        engine: EngineAPI,
        *,
        start_after: str | None = "0-0",
        retry_s: float = 0.5,
        max_retry_s: float = 5.0,
        buffer: int = 50_000,
    ) -> None:
        self.engine = engine
        self.last_id = start_after
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.pending: deque[Event] = deque(maxlen=buffer)
        self.problem = ""
        self.received = 0

    def drain(self) -> list[Event]:
        batch = list(self.pending)
        self.pending.clear()
        return batch

    async def run(self) -> None:
        delay = self.retry_s
        while True:
            try:
                async for event in self.engine.events(self.last_id):
                    if event.id:
                        self.last_id = event.id
                    self.pending.append(event)
                    self.received += 1
                    if self.problem:
                        self.problem = ""
                    delay = self.retry_s
            except asyncio.CancelledError:
                raise
            except OrchestratorError as exc:
                self.problem = f"event stream: {exc.message}"
            except Exception as exc:  # lagged, connection lost: reconnect from last id
                self.problem = f"event stream: {exc or type(exc).__name__}; reconnecting"
                log.debug("event feed interrupted: %r", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_s)
