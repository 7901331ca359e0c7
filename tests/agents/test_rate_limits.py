"""Shared rate limits: the real gateway before the real scripted model refusing with 429/529."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
import pytest_asyncio

from core.agents import ModelGateway, PriceTable
from core.agents.gateway import AgentEndpoint
from core.agents.ratelimit import SharedRateLimit, header_wait, rate_limited_event
from core.agents.scripted import ScriptedModelServer
from core.models import Event, EventType
from tests.agents.conftest import REAL_KEY, UsageLog, module_command

HELLO = {
    "model": "scripted-1",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi [script:reviewer-approve]"}],
}


@dataclass
class LimitLog:
    calls: list[tuple[datetime, float, int]] = field(default_factory=list)

    async def __call__(self, until: datetime, wait_s: float, status: int) -> None:
        self.calls.append((until, wait_s, status))


@pytest.fixture
def limit_log() -> LimitLog:
    return LimitLog()


@pytest_asyncio.fixture
async def limited_gateway(
    scripted: ScriptedModelServer, usage_log: UsageLog, limit_log: LimitLog
) -> AsyncIterator[ModelGateway]:
    gw = ModelGateway(
        scripted.url,
        REAL_KEY,
        PriceTable.load(),
        usage_log,
        on_rate_limited=limit_log,
        rate_limit=SharedRateLimit(default_s=0.5, jitter=0.1),
    )
    try:
        yield gw
    finally:
        await gw.close()


@contextlib.asynccontextmanager
async def agents(
    gateway: ModelGateway, socket_dir: Path, count: int, **kwargs: Any
) -> AsyncIterator[list[AgentEndpoint]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                gateway.serve_agent(f"a{i}", socket_dir / f"a{i}", None, **kwargs)
            )
            for i in range(count)
        ]


async def post(
    endpoint: AgentEndpoint,
    *,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] = HELLO,
    timeout: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = headers if headers is not None else {"x-api-key": endpoint.token}
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(endpoint.socket_path)),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as s,
        s.post("http://gateway/v1/messages", json=body, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def sdk(endpoint: AgentEndpoint) -> anthropic.AsyncAnthropic:
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(endpoint.socket_path)))
    return anthropic.AsyncAnthropic(
        api_key=endpoint.token, base_url="http://gateway", http_client=http, max_retries=0
    )


# --- the agent's token --------------------------------------------------------------------------


async def test_token_as_x_api_key_or_bearer_and_never_forwarded(
    gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path
) -> None:
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        token = endpoint.token
        ok_x, _, _ = await post(endpoint, headers={"x-api-key": token})
        ok_bearer, _, _ = await post(endpoint, headers={"Authorization": f"Bearer {token}"})
        ok_both, _, _ = await post(
            endpoint, headers={"x-api-key": token, "Authorization": f"Bearer {token}"}
        )
        wrong = [
            (await post(endpoint, headers=h))[0]
            for h in (
                {"x-api-key": token[:-1]},
                {"x-api-key": ""},
                {"Authorization": f"Bearer {token}x"},
                {"Authorization": token},  # not a bearer credential
                {"x-api-key": token, "Authorization": "Bearer guess"},
                {"x-api-key": "guess", "Authorization": f"Bearer {token}"},
                {},
            )
        ]
    assert (ok_x, ok_bearer, ok_both) == (200, 200, 200)
    assert wrong == [401] * 7
    assert len(scripted.requests) == 3  # the refused ones never reached the upstream
    for recorded in scripted.requests:
        assert recorded.headers["Authorization"] == f"Bearer {REAL_KEY}"
        assert "x-api-key" not in {k.lower() for k in recorded.headers}
        assert not any(token in value for value in recorded.headers.values())


# --- where a hold comes from --------------------------------------------------------------------


def test_header_wait_reads_retry_after_dates_and_resets() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert header_wait({"retry-after": "7"}, now) == 7.0
    assert header_wait({"Retry-After": "1.5"}, now) == 1.5
    assert header_wait({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert header_wait({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now) == 30.0
    assert header_wait({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, now) == 0.0
    reset = (now + timedelta(seconds=20)).isoformat().replace("+00:00", "Z")
    soon = (now + timedelta(seconds=5)).isoformat()
    headers = {
        "anthropic-ratelimit-requests-reset": soon,
        "anthropic-ratelimit-requests-remaining": "3",
        "anthropic-ratelimit-tokens-reset": reset,
        "anthropic-ratelimit-tokens-remaining": "0",
    }
    assert header_wait(headers, now) == 20.0  # the limit that is spent
    del headers["anthropic-ratelimit-tokens-remaining"]
    assert header_wait(headers, now) == 5.0  # none says which: the earliest
    for junk in ("soon", "-3", "nan", "inf", ""):
        assert header_wait({"retry-after": junk}, now) is None
    assert header_wait({"anthropic-ratelimit-tokens-reset": "tomorrow"}, now) is None
    assert header_wait({}, now) is None


def test_holds_are_capped_backed_off_and_grouped_in_episodes() -> None:
    clock = [100.0]
    limits = SharedRateLimit(default_s=1.0, max_s=30.0, jitter=0.0, clock=lambda: clock[0])
    first = limits.record(429, {"retry-after": "3600"})
    assert first.new_episode and first.wait_s == 30.0  # capped
    assert limits.until_monotonic == 130.0 and limits.outlasts(120.0)
    assert not limits.outlasts(None) and not limits.outlasts(131.0)
    again = limits.record(429, {"retry-after": "2"})  # a request that was already in flight
    assert not again.new_episode and limits.until_monotonic == 130.0
    clock[0] = 131.0
    assert limits.until_monotonic is None and limits.until is None
    waits = [limits.record(529, {}).wait_s]  # refused again after the hold: same episode
    clock[0] += waits[-1] + 0.01
    waits.append(limits.record(529, {}).wait_s)
    assert waits == [1.0, 2.0] and limits.episodes == 1
    clock[0] += 5
    assert limits.record(429, {"retry-after": "0"}).wait_s == 0.5  # never a busy loop
    limits.clear()  # a real answer ends the episode
    clock[0] += 10
    assert limits.record(429, {}).new_episode and limits.episodes == 2
    clock[0] += 100  # long after the hold, without an answer in between: a new episode too
    assert limits.record(429, {}).new_episode and limits.episodes == 3
    with pytest.raises(ValueError):
        SharedRateLimit(default_s=0)


# --- the gateway holds every agent, then retries ------------------------------------------------


async def test_concurrent_agents_are_held_then_answered_with_one_event(
    limited_gateway: ModelGateway,
    scripted: ScriptedModelServer,
    socket_dir: Path,
    limit_log: LimitLog,
    usage_log: UsageLog,
) -> None:
    gateway = limited_gateway
    scripted.rate_limit(1.5)
    async with agents(gateway, socket_dir, 3) as endpoints:
        started = time.monotonic()
        first = [asyncio.create_task(post(e)) for e in endpoints]
        while not scripted.limited:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert gateway.rate_limited_until is not None
        assert gateway.rate_limited_until > datetime.now(UTC)
        # requests that come during the hold wait with the others, without reaching the upstream
        seen = len(scripted.requests)
        later = [asyncio.create_task(post(e)) for e in endpoints]
        await asyncio.sleep(0.3)
        assert len(scripted.requests) == seen
        results = await asyncio.gather(*first, *later)
        elapsed = time.monotonic() - started
    assert [status for status, _, _ in results] == [200] * 6
    assert elapsed >= 1.4  # held until the limit was over
    assert gateway.rate_limited_until is None
    # the upstream saw each first request refused once, then each request once after the hold
    assert 1 <= len(scripted.limited) <= 3
    hold_end = max(a.at for a in scripted.limited) + 2.0  # retry-after: ceil(1.5) = 2
    assert scripted.answered == 6
    assert [status for _, _, status in limit_log.calls] == [429]
    until, wait_s, _ = limit_log.calls[0]
    assert 1.9 <= wait_s <= 2.1
    assert until > datetime.now(UTC) - timedelta(seconds=5)
    assert time.monotonic() >= hold_end - 0.1
    assert len(usage_log.calls) == 6  # each answer counted once, the refusals not at all


async def test_wait_clear_waits_for_the_hold(
    limited_gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path
) -> None:
    gateway = limited_gateway
    assert await gateway.wait_clear() is True  # nothing holds: at once
    scripted.rate_limit(1.0)
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        request = asyncio.create_task(post(endpoint))
        while gateway.rate_limited_until is None:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        assert await gateway.wait_clear(deadline=time.monotonic() + 0.2) is False
        assert time.monotonic() - started < 0.1  # gave up at once, no endless wait
        assert await gateway.wait_clear(deadline=time.monotonic() + 30) is True
        waited = time.monotonic() - started
        assert gateway.rate_limited_until is None
        status, _, _ = await request
    assert status == 200
    assert 0.8 <= waited <= 1.5


@pytest.mark.parametrize("status", [429, 529])
async def test_an_agent_whose_deadline_comes_first_gets_the_refusal(
    limited_gateway: ModelGateway,
    scripted: ScriptedModelServer,
    socket_dir: Path,
    limit_log: LimitLog,
    status: int,
) -> None:
    gateway = limited_gateway
    scripted.rate_limit(2.0, status)
    async with (
        gateway.serve_agent("patient", socket_dir / "p", None) as patient,
        gateway.serve_agent(
            "hurried", socket_dir / "h", None, deadline=time.monotonic() + 1.0
        ) as hurried,
    ):
        waiting = asyncio.create_task(post(patient))
        started = time.monotonic()
        refused, headers, body = await post(hurried)
        quick = time.monotonic() - started
        # and a second request of it, during the hold, is refused without reaching the upstream
        seen = len(scripted.requests)
        again, again_headers, _ = await post(hurried)
        assert len(scripted.requests) == seen
        assert (await waiting)[0] == 200
    assert quick < 0.8  # passed on at once, not after waiting until its deadline
    assert refused == again == status
    kind = "rate_limit_error" if status == 429 else "overloaded_error"
    assert kind.encode() in body
    assert 1 <= int(headers["Retry-After"]) <= 2 and 1 <= int(again_headers["Retry-After"]) <= 2
    assert [s for _, _, s in limit_log.calls] == [status]


async def test_529_without_retry_after_backs_off(
    limited_gateway: ModelGateway,
    scripted: ScriptedModelServer,
    socket_dir: Path,
    limit_log: LimitLog,
) -> None:
    scripted.rate_limit(1.0, 529, retry_after=False)
    async with agents(limited_gateway, socket_dir, 2) as endpoints:
        started = time.monotonic()
        results = await asyncio.gather(*(post(e) for e in endpoints))
        elapsed = time.monotonic() - started
    assert [r[0] for r in results] == [200, 200]
    # default 0.5 s, then 1 s when refused again: two or three rounds, not a hammering
    assert 2 <= len(scripted.limited) <= 6
    assert all(a.retry_after is None and a.status == 529 for a in scripted.limited)
    assert 1.0 <= elapsed <= 3.0
    assert len(limit_log.calls) == 1


async def test_reservations_are_settled_once_across_retries_and_hang_ups(
    limited_gateway: ModelGateway,
    scripted: ScriptedModelServer,
    socket_dir: Path,
    usage_log: UsageLog,
) -> None:
    scripted.rate_limit(1.0)
    async with limited_gateway.serve_agent("a1", socket_dir, 50_000) as endpoint:
        status, _, _ = await post(endpoint)
        assert status == 200
        assert endpoint.budget.reserved == 0
        assert endpoint.budget.used == endpoint.tokens_used > 0
        assert len(usage_log.calls) == 1
        used = endpoint.budget.used
        scripted.rate_limit(2.0)
        with pytest.raises(TimeoutError):  # the agent hangs up while it is held
            await post(endpoint, timeout=0.5)
        for _ in range(100):
            if endpoint.budget.reserved == 0:
                break
            await asyncio.sleep(0.02)
        assert endpoint.budget.reserved == 0
        assert endpoint.budget.used == used  # a refused request costs nothing
    assert len(usage_log.calls) == 1


async def test_a_token_count_near_the_budget_end_is_held_and_asked_again(
    limited_gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path
) -> None:
    scripted.rate_limit(1.0)
    async with limited_gateway.serve_agent("a1", socket_dir, 250) as endpoint:
        status, _, _ = await post(endpoint)  # too close to the budget for the cheap bound
        assert endpoint.budget.reserved == 0
    assert status == 200
    assert [a.path for a in scripted.limited] == ["/v1/messages/count_tokens"]
    answered = [r.path for r in scripted.requests if r.at > scripted.limited[0].at]
    assert answered == ["/v1/messages/count_tokens", "/v1/messages"]


async def test_streaming_through_the_sdk_is_held_and_retried(
    limited_gateway: ModelGateway,
    scripted: ScriptedModelServer,
    socket_dir: Path,
    limit_log: LimitLog,
) -> None:
    scripted.rate_limit(1.0)
    async with agents(limited_gateway, socket_dir, 2) as endpoints:
        clients = [sdk(e) for e in endpoints]
        try:

            async def stream(client: anthropic.AsyncAnthropic) -> list[str]:
                async with client.messages.stream(**HELLO) as s:  # type: ignore[arg-type]
                    types = [event.type async for event in s]
                    await s.get_final_message()
                return types

            streamed, created = await asyncio.gather(
                stream(clients[0]),
                clients[1].messages.create(**HELLO),  # type: ignore[arg-type]
            )
        finally:
            for client in clients:
                await client.close()
    assert streamed[0] == "message_start" and streamed[-1] == "message_stop"
    assert created.content[0].type == "text"
    assert scripted.limited and len(limit_log.calls) == 1


@pytest.mark.parametrize(
    ("status", "error"), [(429, anthropic.RateLimitError), (529, anthropic.OverloadedError)]
)
async def test_the_sdk_sees_the_refusal_past_its_deadline(
    limited_gateway: ModelGateway,
    scripted: ScriptedModelServer,
    socket_dir: Path,
    status: int,
    error: type[anthropic.APIStatusError],
) -> None:
    scripted.rate_limit(3.0, status)
    async with limited_gateway.serve_agent(
        "a1", socket_dir, None, deadline=time.monotonic() + 1.0
    ) as endpoint:
        client = sdk(endpoint)
        try:
            with pytest.raises(error):
                await client.messages.create(**HELLO)  # type: ignore[arg-type]
            with pytest.raises(error) as info:  # during the hold: the same answer, at once
                async with client.messages.stream(**HELLO) as s:  # type: ignore[arg-type]
                    await s.get_final_message()
        finally:
            await client.close()
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert len(scripted.limited) == 1


async def test_a_failing_on_rate_limited_does_not_fail_the_request(
    scripted: ScriptedModelServer,
    socket_dir: Path,
    usage_log: UsageLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(until: datetime, wait_s: float, status: int) -> None:
        raise RuntimeError("store down")

    gateway = ModelGateway(
        scripted.url, REAL_KEY, PriceTable.load(), usage_log, on_rate_limited=broken
    )
    scripted.rate_limit(0.5)
    try:
        with caplog.at_level(logging.ERROR, logger="core.agents.ratelimit"):
            async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
                status, _, _ = await post(endpoint)
    finally:
        await gateway.close()
    assert status == 200
    assert "on_rate_limited failed" in caplog.text


def test_the_rate_limited_event() -> None:
    until = datetime(2026, 1, 1, 12, 0, 2, tzinfo=UTC)
    event = Event.from_wire(rate_limited_event(until, 2.00042, 529).wire())
    assert event.type is EventType.MODEL_RATE_LIMITED and event.type == "model.rate_limited"
    assert event.agent_id is None
    assert event.data == {"untilTs": "2026-01-01T12:00:02+00:00", "waitS": 2.0, "status": 529}


# --- the scripted model's rate limits -----------------------------------------------------------


async def test_the_scripted_model_refuses_everything_for_a_while() -> None:
    async with ScriptedModelServer() as server, aiohttp.ClientSession() as http:

        async def call(path: str = "/v1/messages") -> tuple[int, str | None, Any]:
            async with http.post(server.url + path, json=HELLO) as response:
                return response.status, response.headers.get("retry-after"), await response.json()

        with pytest.raises(ValueError, match="429 or 529"):
            server.rate_limit(1, 500)
        for bad in ({"seconds": 0}, {"seconds": 4000}, {"seconds": 1, "after": -1}):
            with pytest.raises(ValueError):
                server.rate_limit(**bad)
        server.rate_limit(0.6, after=1)
        assert (await call())[0] == 200  # the window begins after one answer
        status, retry_after, body = await call()
        assert (status, retry_after) == (429, "1")
        assert body["error"]["type"] == "rate_limit_error"
        assert (await call("/v1/messages/count_tokens"))[0] == 429  # every request
        await asyncio.sleep(0.7)
        assert (await call())[0] == 200
        server.rate_limit(0.5, 529, retry_after=False)
        status, retry_after, body = await call()
        assert (status, retry_after, body["error"]["type"]) == (529, None, "overloaded_error")
    assert [(a.path, a.status) for a in server.limited] == [
        ("/v1/messages", 429),
        ("/v1/messages/count_tokens", 429),
        ("/v1/messages", 529),
    ]
    assert server.answered == 2


async def test_the_scripted_model_command_line_knob() -> None:
    proc = await asyncio.create_subprocess_exec(
        *module_command(
            "core.agents.scripted",
            "--port",
            "0",
            "--rate-limit",
            "30",
            "--rate-limit-status",
            "529",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.split(" listening on ")[1].split()[0]
        async with (
            aiohttp.ClientSession() as http,
            http.post(url + "/v1/messages", json=HELLO) as response,
        ):
            assert response.status == 529
            assert 1 <= int(response.headers["retry-after"]) <= 30
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
    bad = await asyncio.create_subprocess_exec(
        *module_command("core.agents.scripted", "--rate-limit", "0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await bad.communicate()
    assert bad.returncode == 2
    assert err.decode().startswith("scripted model: a rate limit lasts")
