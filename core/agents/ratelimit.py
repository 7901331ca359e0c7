"""The model's rate limits, shared by every agent of a gateway (SPEC §15 "Rate limits").

When the upstream answers 429 (rate limited) or 529 (overloaded), ``SharedRateLimit.record``
sets a "hold until" for the whole gateway: every agent's next request waits for it (``wait``)
instead of hitting the upstream again, and the refused request is retried after it. The hold comes
from the answer's headers, in this order: ``retry-after-ms``, ``retry-after`` (seconds or an HTTP
date), the latest ``anthropic-ratelimit-*-reset`` (RFC 3339) of a limit whose ``*-remaining`` is 0
(else the earliest one); without any, a backoff that doubles with each refusal of the episode, with
jitter. Every hold lasts from ``MIN_S`` to ``max_s``.

A limit *episode* begins with the first refusal while no hold applies and ends when a request gets
any other answer (``clear``), or when a refusal comes long after the last hold ended (``gap_s``);
``record`` tells whether it began one, so that the gateway publishes one event per episode.

Times are ``time.monotonic()`` seconds (deadlines too); ``until`` gives the wall-clock end as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp.web_response import Response

from core.agents.httpserve import error_response
from core.models import Event, EventType

log = logging.getLogger(__name__)

LIMIT_STATUSES = frozenset({429, 529})
DEFAULT_S = 2.0
"""The first hold of an episode when the answer says nothing about when to retry."""
MAX_S = 300.0
"""No single hold is longer than this, whatever the upstream says."""
MIN_S = 0.5
"""Nor shorter: a ``retry-after: 0`` must not turn the retries into a busy loop."""
GAP_S = 60.0
"""A refusal this long after the last hold ended begins a new episode."""
JITTER = 0.25
"""Holds without a given end are lengthened by up to this fraction, so clients spread out."""


OnRateLimited = Callable[[datetime, float, int], Awaitable[None]]
"""``(until, wait_s, status)``: called once when a rate-limit episode begins."""


@dataclass(frozen=True)
class Limited:
    """One refusal as recorded: how long to hold, and whether it began an episode."""

    status: int
    wait_s: float
    until: datetime
    new_episode: bool


def rate_limited_event(until: datetime, wait_s: float, status: int) -> Event:
    """The ``model.rate_limited`` event of an episode (every agent waits, so it names none):
    data ``{untilTs, waitS, status}``."""
    return Event(
        type=EventType.MODEL_RATE_LIMITED,
        data={"untilTs": until.isoformat(), "waitS": round(wait_s, 3), "status": status},
    )


def header_wait(headers: Mapping[str, str], now: datetime) -> float | None:
    """The seconds to wait that ``headers`` give, or None when they give none."""
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    if (ms := _number(lowered.get("retry-after-ms"))) is not None:
        return ms / 1000.0
    if (raw := lowered.get("retry-after")) is not None:
        if (seconds := _number(raw)) is not None:
            return seconds
        with _no_error():
            date = email.utils.parsedate_to_datetime(raw)
            if date.tzinfo is None:
                date = date.replace(tzinfo=UTC)
            return max(0.0, (date - now).total_seconds())
    resets: list[tuple[bool, float]] = []
    for key, value in lowered.items():
        if key.startswith("anthropic-ratelimit-") and key.endswith("-reset"):
            with _no_error():
                at = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
                spent = lowered.get(key.removesuffix("-reset") + "-remaining") == "0"
                resets.append((spent, max(0.0, (at - now).total_seconds())))
    spent_resets = [wait for spent, wait in resets if spent]
    if spent_resets:
        return max(spent_resets)
    return min((wait for _, wait in resets), default=None)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _no_error() -> contextlib.suppress:
    """Ignores a malformed header value (it is the upstream's, not ours)."""
    return contextlib.suppress(ValueError, TypeError, IndexError, OverflowError)


class SharedRateLimit:
    """The hold every request of a gateway respects. Not thread-safe: one event loop."""

    def __init__(
        self,
        *,
        default_s: float = DEFAULT_S,
        max_s: float = MAX_S,
        gap_s: float = GAP_S,
        jitter: float = JITTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < default_s <= max_s:
            raise ValueError("rate limit holds need 0 < default_s <= max_s")
        self.default_s = default_s
        self.max_s = max_s
        self.gap_s = gap_s
        self.jitter = jitter
        self._clock = clock
        self._until = 0.0
        self._in_episode = False
        self._refusals = 0
        self.episodes = 0
        """Episodes begun so far."""

    @property
    def until_monotonic(self) -> float | None:
        """When the current hold ends (``time.monotonic()``), None when none applies."""
        return self._until if self._until > self._clock() else None

    @property
    def until(self) -> datetime | None:
        """When the current hold ends (UTC), None when none applies."""
        left = self.remaining_s()
        return datetime.now(UTC) + timedelta(seconds=left) if left > 0 else None

    def remaining_s(self) -> float:
        return max(0.0, self._until - self._clock())

    def record(self, status: int, headers: Mapping[str, str]) -> Limited:
        """Note a 429/529 answer: extend the hold and say whether an episode began."""
        now = self._clock()
        holding = self._until > now
        new_episode = not self._in_episode or (not holding and now - self._until > self.gap_s)
        if new_episode:
            self._in_episode = True
            self._refusals = 0
            self.episodes += 1
        given = header_wait(headers, datetime.now(UTC))
        if given is not None:
            wait = min(max(given, MIN_S), self.max_s)
        else:
            if not holding:  # a refusal of a request sent after the hold: back off further
                self._refusals += 1
            backoff = self.default_s * 2 ** max(0, self._refusals - 1)
            wait = min(backoff * (1 + random.uniform(0, self.jitter)), self.max_s)
        self._until = max(self._until, now + wait)
        wait_s = self._until - now
        if new_episode:
            log.warning(
                "model rate limited (%d): holding every agent's requests %.1fs", status, wait_s
            )
        return Limited(status, wait_s, datetime.now(UTC) + timedelta(seconds=wait_s), new_episode)

    def clear(self) -> None:
        """A request got a real answer: the episode is over (a hold still running stays)."""
        self._in_episode = False
        self._refusals = 0

    def outlasts(self, deadline: float | None) -> bool:
        """Whether the current hold ends after ``deadline`` (monotonic; None: no deadline)."""
        return deadline is not None and self._until > deadline and self._until > self._clock()

    async def wait(self, deadline: float | None = None) -> bool:
        """Wait until no hold applies; False at once when the hold would outlast ``deadline``.

        A hold extended while waiting is waited for too (a request refused again after the hold).
        """
        while (left := self._until - self._clock()) > 0:
            if self.outlasts(deadline):
                return False
            await asyncio.sleep(left)
        return True


class RateLimitGate:
    """What a gateway does with the upstream's refusals: the shared hold, the episode's event, and
    the refusal it passes on to an agent that cannot wait it out."""

    def __init__(self, limits: SharedRateLimit, on_rate_limited: OnRateLimited | None) -> None:
        self.limits = limits
        self.on_rate_limited = on_rate_limited
        self._last: tuple[int, bytes, dict[str, str]] | None = None
        """The upstream's last 429/529 answer: status, body, the headers passed on."""

    async def clear(self, agent_id: str, deadline: float | None) -> Response | None:
        """Wait out the hold: None once clear, or the refusal to answer when the hold would
        outlast the agent's ``deadline`` (with a ``retry-after`` for what is left of it)."""
        if await self.limits.wait(deadline):
            return None
        log.info("agent %s's deadline comes before the rate limit ends; refused", agent_id)
        status, body, headers = self._last or (429, b"", {})
        if body:
            response = Response(status=status, body=body, headers=headers)
        else:
            response = error_response(
                429, "rate_limit_error", "the model is rate limited", retry=True
            )
        response.headers["retry-after"] = str(max(1, math.ceil(self.limits.remaining_s())))
        return response

    async def refused(
        self,
        agent_id: str,
        deadline: float | None,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        passed_on: dict[str, str],
    ) -> bool:
        """Record a 429/529 for every agent; whether the agent can wait for it (then retry)."""
        limited = self.limits.record(status, headers)
        self._last = (status, body, passed_on)
        log.info("upstream answered %s for agent %s; hold %.1fs", status, agent_id, limited.wait_s)
        if limited.new_episode and self.on_rate_limited is not None:
            try:
                await self.on_rate_limited(limited.until, limited.wait_s, limited.status)
            except Exception:
                log.exception("on_rate_limited failed")
        return not self.limits.outlasts(deadline)
