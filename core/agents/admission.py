"""What the model gateway lets one agent do: requests in flight, token reservations, token counts.

- ``Slots``: at most ``limit`` requests of an agent are in flight at once; up to ``max_waiting``
  more wait their turn (first come, first served) for at most ``wait_s``; beyond that a request
  is refused with 429 and a ``retry-after``, which the SDKs honour.
- ``TokenBudget``: before a request is forwarded it reserves its input tokens plus its
  ``max_tokens`` (capped to what is left), so requests in parallel can never spend more than the
  budget together; the reservation is settled with the real usage when the response ends.
- ``RateLimit``: a token bucket for ``count_tokens``, which costs nothing upstream but is an oracle
  an agent could otherwise call without limit.

``input_bound`` is a cheap upper bound of a request's input tokens: a token covers at least one byte
of text, so the JSON body's size bounds its text (plus the hidden prompt tool use adds). It does not
hold for content whose tokens the upstream computes itself (images, documents, server-side tools):
there the gateway asks the upstream's ``count_tokens``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

TOOL_PROMPT_TOKENS = 1024
"""Room for the system prompt the upstream adds when tools are offered (~350 tokens today)."""
FRAME_TOKENS = 64
"""Room for the few tokens of message framing not covered by the body's own bytes."""
UNBOUNDED_BLOCKS = frozenset({"image", "document", "search_result", "container_upload"})
COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")
"""The fields of a Messages request that ``/v1/messages/count_tokens`` accepts."""


class Refused(Exception):
    """A request the gateway answers itself, in the upstream's error shape."""

    def __init__(
        self, status: int, kind: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def budget_refusal(agent_id: str, budget: TokenBudget, why: str = "") -> Refused:
    """402 ``billing_error``; the runtime reports it as ``budget exceeded: tokens (...)``."""
    message = (
        f"token budget exhausted for agent {agent_id}: used {budget.used} of {budget.limit} tokens"
    )
    return Refused(402, "billing_error", message + (f"; {why}" if why else ""))


class Slots:
    """A per-agent cap on requests in flight, with a bounded, time-limited queue behind it."""

    def __init__(self, limit: int, *, max_waiting: int, wait_s: float) -> None:
        if limit < 1:
            raise ValueError("the in-flight limit must be at least 1")
        self.limit = limit
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.in_flight = 0
        self.waiting = 0
        self._semaphore = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def hold(self, agent_id: str) -> AsyncIterator[None]:
        if self._semaphore.locked() and self.waiting >= self.max_waiting:
            raise self._busy(agent_id, "and its queue is full")
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            raise self._busy(agent_id, f"and this one waited {self.wait_s:g}s") from None
        finally:
            self.waiting -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._semaphore.release()

    def _busy(self, agent_id: str, detail: str) -> Refused:
        return Refused(
            429,
            "rate_limit_error",
            f"agent {agent_id} has {self.limit} model requests in flight (its limit) {detail}",
            retry_after=1.0,
        )


class RateLimit:
    """A token bucket: ``per_minute`` on average, bursts of up to ``burst``."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> float:
        """0.0 when a request may go now (and it is counted), else the seconds until one may."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate if self.rate > 0 else math.inf


@dataclass
class Reservation:
    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


class TokenBudget:
    """Tokens used and reserved by one agent's requests. ``limit`` None: no budget."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self.reserved = 0
        self._changed = asyncio.Event()

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def fits_now(self, tokens: int) -> bool:
        return self.limit is None or self.used + self.reserved + tokens <= self.limit

    async def reserve(self, input_tokens: int, max_tokens: int, *, wait_s: float) -> Reservation:
        """Reserve ``input_tokens`` plus ``max_tokens`` capped to what is left of the budget.

        Raises ``LookupError`` when even with nothing else in flight no output token would fit,
        and ``TimeoutError`` when others' reservations do not leave room within ``wait_s``.
        """
        if self.limit is None:
            return Reservation(input_tokens, max_tokens)
        async with asyncio.timeout(wait_s):
            while True:
                output = min(max_tokens, self.limit - self.used - input_tokens)
                if output < 1:
                    raise LookupError(input_tokens)
                if self.fits_now(input_tokens + output):
                    self.reserved += input_tokens + output
                    return Reservation(input_tokens, output)
                # others' reservations are in the way: they end with their requests
                self._changed.clear()
                await self._changed.wait()

    def settle(self, reservation: Reservation, charged: int) -> None:
        """Release ``reservation`` and count ``charged`` tokens as used (synchronous on purpose)."""
        if self.limit is not None:
            self.reserved -= reservation.total
        self.used += charged
        self._changed.set()


def input_bound(body: dict[str, Any], body_bytes: int) -> int | None:
    """An upper bound of the request's input tokens, or None when its size does not bound them."""
    if body.get("mcp_servers") or _unbounded([body.get("messages"), body.get("system")]):
        return None
    tools = body.get("tools")
    if isinstance(tools, list) and any(
        not isinstance(t, dict) or t.get("type") not in (None, "custom") for t in tools
    ):
        return None  # server-side and Anthropic-defined tools carry definitions the body lacks
    return body_bytes + FRAME_TOKENS + (TOOL_PROMPT_TOKENS if tools else 0)


def _unbounded(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return True
    if isinstance(value, dict):
        if value.get("type") in UNBOUNDED_BLOCKS:
            return True
        return any(_unbounded(v, depth + 1) for v in value.values() if isinstance(v, dict | list))
    if isinstance(value, list):
        return any(_unbounded(v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


def count_request(body: dict[str, Any]) -> dict[str, Any]:
    """The ``count_tokens`` request for a Messages request."""
    return {k: body[k] for k in COUNT_FIELDS if k in body}


def cap_max_tokens(body: dict[str, Any], output: int) -> str | None:
    """Lower ``max_tokens`` (and a thinking budget above it) to ``output``, or say why not."""
    body["max_tokens"] = output
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and budget >= output:
            if output - 1 < 1024:  # the upstream's smallest thinking budget
                return f"{output} output tokens left cannot hold a thinking response"
            body["thinking"] = {**thinking, "budget_tokens": output - 1}
    return None
