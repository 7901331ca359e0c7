"""Budgets that hold: an agent calling its gateway directly, in parallel, cannot overspend.

The real gateway on real Unix sockets, in front of the scripted model (answers stop at
``max_tokens``, as the API's do) or, where the timing matters, a slow Messages-API upstream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse
from multidict import CIMultiDict

from core.agents import ModelGateway, PriceTable
from core.agents.admission import input_bound
from core.agents.gateway import AgentEndpoint
from core.agents.httpserve import RunningServer, serve_tcp
from core.agents.scripted import ScriptedModelServer
from tests.agents.conftest import REAL_KEY, UsageLog

PROMPT = "x" * 1600 + " [script:reviewer-approve]"


def request_body(max_tokens: int = 1024, *, stream: bool = False) -> dict[str, Any]:
    return {
        "model": "scripted-1",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": PROMPT}],
    }


def unix_session(endpoint: AgentEndpoint) -> aiohttp.ClientSession:
    connector = aiohttp.UnixConnector(path=str(endpoint.socket_path), limit=0)
    return aiohttp.ClientSession(
        connector=connector, headers={"Authorization": f"Bearer {endpoint.token}"}
    )


async def post(
    http: aiohttp.ClientSession, body: object, path: str = "/v1/messages"
) -> tuple[int, dict[str, Any], CIMultiDict[str]]:
    async with http.post(f"http://gateway{path}", json=body) as response:
        raw = await response.read()
        if response.content_type == "text/event-stream":
            return response.status, {"stream": raw.decode()}, CIMultiDict(response.headers)
        return response.status, json.loads(raw), CIMultiDict(response.headers)


@pytest.fixture
def strict(scripted: ScriptedModelServer) -> ScriptedModelServer:
    scripted.honour_max_tokens = True
    return scripted


def recorded(usage_log: UsageLog) -> int:
    return sum(u.input_tokens + u.output_tokens for _, u in usage_log.calls)


async def test_twenty_parallel_requests_cannot_overshoot_the_budget(
    gateway: ModelGateway, strict: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    """Measured before reservations: all 20 answered, ``used 9120 of 5000 tokens``."""
    async with (
        gateway.serve_agent("a1", socket_dir, token_budget=5000) as endpoint,
        unix_session(endpoint) as http,
    ):
        answers = await asyncio.gather(
            *(post(http, request_body(stream=bool(i % 2))) for i in range(20))
        )
        assert endpoint.budget.reserved == 0
        used = endpoint.tokens_used
    statuses = sorted(status for status, _, _ in answers)
    assert used <= 5000, f"used {used} of 5000 tokens"
    assert recorded(usage_log) == used
    assert 200 in statuses and 402 in statuses and set(statuses) == {200, 402}
    refusals = [body["error"] for status, body, _ in answers if status == 402]
    assert all(e["type"] == "billing_error" for e in refusals)
    assert all("token budget exhausted for agent a1" in e["message"] for e in refusals)
    # what was refused never reached the model; every answer was recorded
    forwarded = [r for r in strict.requests if r.path == "/v1/messages"]
    assert len(forwarded) == statuses.count(200) == len(usage_log.calls)


async def test_max_tokens_is_capped_to_what_is_left(
    gateway: ModelGateway, strict: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    async with (
        gateway.serve_agent("a1", socket_dir, token_budget=450) as endpoint,
        unix_session(endpoint) as http,
    ):
        status, message, _ = await post(http, request_body(max_tokens=4096))
        assert status == 200, message
        counted = [r for r in strict.requests if r.path.endswith("/count_tokens")]
        # the body's size does not fit the 450 left: the gateway asked the upstream for a count
        assert len(counted) == 1 and "max_tokens" not in counted[0].body
        sent = strict.requests[-1].body["max_tokens"]
        assert sent == 450 - message["usage"]["input_tokens"]
        assert message["stop_reason"] == "max_tokens"
        assert endpoint.tokens_used == 450
        # nothing is left: the next request is refused before it reaches the model
        status, refused, _ = await post(http, request_body(max_tokens=10))
        assert status == 402
        assert refused["error"]["message"] == (
            "token budget exhausted for agent a1: used 450 of 450 tokens"
        )
    assert [r.path for r in strict.requests].count("/v1/messages") == 1
    assert recorded(usage_log) == 450


async def test_a_request_whose_input_leaves_no_room_is_refused(
    gateway: ModelGateway, strict: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    async with (
        gateway.serve_agent("a1", socket_dir, token_budget=300) as endpoint,
        unix_session(endpoint) as http,
    ):
        status, refused, _ = await post(http, request_body())
        assert endpoint.budget.reserved == 0 and endpoint.tokens_used == 0
    assert status == 402
    message = refused["error"]["message"]
    assert message.startswith("token budget exhausted for agent a1: used 0 of 300 tokens")
    assert "input tokens leave no room for an answer" in message
    assert "/v1/messages" not in [r.path for r in strict.requests]
    assert usage_log.calls == []


async def test_max_tokens_must_be_given_under_a_budget(
    gateway: ModelGateway, strict: ScriptedModelServer, socket_dir: Path
) -> None:
    async with (
        gateway.serve_agent("a1", socket_dir, token_budget=5000) as endpoint,
        unix_session(endpoint) as http,
    ):
        for value in (None, 0, -5, "100", True):
            body = {**request_body(), "max_tokens": value}
            status, answer, _ = await post(http, body)
            assert status == 400, value
            assert answer["error"]["message"] == "max_tokens must be a positive integer"
    assert strict.requests == []


def test_input_bound_covers_text_and_gives_up_on_opaque_content() -> None:
    text = {"messages": [{"role": "user", "content": "hello"}]}
    assert input_bound(text, 100) == 164
    tools = {**text, "tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    assert input_bound(tools, 100) == 164 + 1024
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    assert input_bound({"messages": [{"role": "user", "content": [image]}]}, 100) is None
    server_tool = {**text, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    assert input_bound(server_tool, 100) is None
    assert input_bound({**text, "mcp_servers": [{"url": "https://m"}]}, 100) is None


# --- a slow upstream: requests in flight, streams cut off ------------------------------------


class SlowUpstream:
    """A Messages-API upstream whose answers wait for ``release``; it counts what is in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        self.counts = 0
        self._running: RunningServer | None = None

    @property
    def url(self) -> str:
        assert self._running is not None
        return f"http://127.0.0.1:{self._running.port}"

    async def handle(self, request: BaseRequest) -> StreamResponse:
        body = json.loads(await request.read())
        if request.path.endswith("/count_tokens"):
            self.counts += 1
            return Response(text=json.dumps({"input_tokens": 10}), content_type="application/json")
        self.started += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if body.get("stream"):
                response = StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                start = {"type": "message_start", "message": {"usage": {"input_tokens": 10}}}
                await response.write(
                    f"event: message_start\ndata: {json.dumps(start)}\n\n".encode()
                )
                await self.release.wait()
                return response
            await self.release.wait()
            message = {
                "type": "message",
                "content": [],
                "usage": {"input_tokens": 10, "output_tokens": 5},
            }
            return Response(text=json.dumps(message), content_type="application/json")
        finally:
            self.in_flight -= 1

    async def __aenter__(self) -> SlowUpstream:
        self._running = await serve_tcp(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        if self._running is not None:
            await self._running.close()


@pytest_asyncio.fixture
async def slow() -> AsyncIterator[SlowUpstream]:
    async with SlowUpstream() as upstream:
        yield upstream


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_requests_beyond_the_in_flight_limit_wait_their_turn(
    slow: SlowUpstream, socket_dir: Path, usage_log: UsageLog
) -> None:
    gateway = ModelGateway(slow.url, REAL_KEY, PriceTable.load(), usage_log, max_inflight=3)
    async with (
        gateway,
        gateway.serve_agent("a1", socket_dir, None) as endpoint,
        unix_session(endpoint) as http,
    ):
        calls = [asyncio.ensure_future(post(http, request_body())) for _ in range(10)]
        await wait_for(lambda: slow.started == 3 and endpoint.slots.waiting == 7)
        await asyncio.sleep(0.2)
        assert slow.in_flight == 3  # the other seven wait in the gateway, not upstream
        slow.release.set()
        answers = await asyncio.gather(*calls)
    assert [status for status, _, _ in answers] == [200] * 10
    assert slow.peak == 3
    assert len(usage_log.calls) == 10


async def test_a_full_queue_answers_429_with_retry_after(
    slow: SlowUpstream, socket_dir: Path, usage_log: UsageLog
) -> None:
    gateway = ModelGateway(
        slow.url, REAL_KEY, PriceTable.load(), usage_log, max_inflight=2, max_waiting=1, wait_s=0.5
    )
    async with (
        gateway,
        gateway.serve_agent("a1", socket_dir, None) as endpoint,
        unix_session(endpoint) as http,
    ):
        calls = [asyncio.ensure_future(post(http, request_body())) for _ in range(3)]
        await wait_for(lambda: slow.started == 2 and endpoint.slots.waiting == 1)
        status, body, headers = await post(http, request_body())  # a fourth: the queue is full
        assert status == 429 and headers["retry-after"] == "1"
        assert body["error"]["type"] == "rate_limit_error"
        assert (
            "has 2 model requests in flight (its limit) and its queue is full"
            in (body["error"]["message"])
        )
        # the third waited 0.5 s for a slot and gave up
        status, body, _ = await calls[2]
        assert status == 429 and "waited 0.5s" in body["error"]["message"]
        slow.release.set()
        assert [s for s, _, _ in await asyncio.gather(*calls[:2])] == [200, 200]
    assert slow.started == 2


async def test_a_stream_cut_off_by_the_agent_counts_its_whole_reservation(
    slow: SlowUpstream, socket_dir: Path, usage_log: UsageLog
) -> None:
    """Else an agent could read an answer and hang up before its usage, and spend for free."""
    gateway = ModelGateway(slow.url, REAL_KEY, PriceTable.load(), usage_log)
    async with gateway, gateway.serve_agent("a1", socket_dir, 100_000) as endpoint:
        async with (
            unix_session(endpoint) as http,
            http.post("http://gateway/v1/messages", json=request_body(500, stream=True)) as resp,
        ):
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"event: message_start")
        await wait_for(lambda: endpoint.budget.reserved == 0)
        # the input the upstream reported, plus all the output the request could have had
        assert endpoint.tokens_used == 10 + 500
    assert usage_log.calls[0][1].output_tokens == 500


async def test_count_tokens_is_metered_and_rate_limited(
    strict: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    gateway = ModelGateway(
        strict.url, REAL_KEY, PriceTable.load(), usage_log, count_tokens_per_min=6
    )
    count = {"model": "scripted-1", "messages": [{"role": "user", "content": "hello"}]}
    async with (
        gateway,
        gateway.serve_agent("a1", socket_dir, 5000) as endpoint,
        unix_session(endpoint) as http,
    ):
        status, body, _ = await post(http, count, "/v1/messages/count_tokens")
        assert status == 200 and body["input_tokens"] > 0
        status, body, headers = await post(http, count, "/v1/messages/count_tokens")
        assert status == 429 and body["error"]["type"] == "rate_limit_error"
        assert "count_tokens is limited to 6 a minute" in body["error"]["message"]
        assert 1 <= int(headers["retry-after"]) <= 10
        assert endpoint.count_calls == 1
        assert endpoint.usage.turns == 0  # a count is not model usage
    assert [r.path for r in strict.requests] == ["/v1/messages/count_tokens"]


async def test_count_tokens_is_refused_once_the_budget_is_spent(
    gateway: ModelGateway, strict: ScriptedModelServer, socket_dir: Path
) -> None:
    async with (
        gateway.serve_agent("a1", socket_dir, token_budget=450) as endpoint,
        unix_session(endpoint) as http,
    ):
        assert (await post(http, request_body(max_tokens=4096)))[0] == 200
        assert endpoint.budget.exhausted
        status, body, _ = await post(http, request_body(), "/v1/messages/count_tokens")
        assert status == 402 and body["error"]["type"] == "billing_error"
        assert endpoint.count_calls == 0
