"""The model gateway over real Unix sockets, in front of the scripted model on loopback."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import aiohttp
import anthropic
import httpx2
import pytest

from core.agents import GatewayError, ModelGateway, PriceTable, model_config_problem
from core.agents.gateway import AgentEndpoint
from core.agents.scripted import ScriptedModelServer
from core.models import Usage
from tests.agents.conftest import REAL_KEY, UsageLog

HELLO = {
    "model": "scripted-1",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi [script:reviewer-approve]"}],
}


def sdk(endpoint: AgentEndpoint, token: str | None = None) -> anthropic.AsyncAnthropic:
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(endpoint.socket_path)))
    return anthropic.AsyncAnthropic(
        api_key=token or endpoint.token, base_url="http://gateway", http_client=http, max_retries=0
    )


async def raw_post(
    endpoint: AgentEndpoint,
    path: str,
    *,
    token: str | None,
    json: object = HELLO,
    method: str = "POST",
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(endpoint.socket_path))) as s,
        s.request(method, f"http://gateway{path}", json=json, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_streaming_is_passed_through_event_by_event(
    gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    direct = anthropic.AsyncAnthropic(api_key="direct", base_url=scripted.url, max_retries=0)
    async with direct.messages.stream(**HELLO) as stream:  # type: ignore[arg-type]
        direct_events = [event.type async for event in stream]
        direct_message = await stream.get_final_message()
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        client = sdk(endpoint)
        async with client.messages.stream(**HELLO) as stream:  # type: ignore[arg-type]
            events = [event.type async for event in stream]
            message = await stream.get_final_message()
        await client.close()
    await direct.close()
    assert events == direct_events
    assert events[0] == "message_start" and "content_block_delta" in events
    assert message.content[0].type == "text"
    assert [b.model_dump(exclude={"id"}) for b in message.content] == [
        b.model_dump(exclude={"id"}) for b in direct_message.content
    ]
    assert scripted.requests[-1].headers["Authorization"] == f"Bearer {REAL_KEY}"
    assert usage_log.calls == [
        (
            "a1",
            Usage(
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
                cost_usd=PriceTable.load().cost(
                    "scripted-1", message.usage.input_tokens, message.usage.output_tokens
                ),
                turns=1,
            ),
        )
    ]


async def test_non_streaming_and_count_tokens_are_forwarded(
    gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        client = sdk(endpoint)
        message = await client.messages.create(**HELLO)  # type: ignore[arg-type]
        counted = await client.messages.count_tokens(model="scripted-1", messages=HELLO["messages"])  # type: ignore[arg-type]
        await client.close()
        assert message.content[0].text == "Let me look at the changes."  # type: ignore[union-attr]
        assert counted.input_tokens > 0
        # count_tokens is not model usage
        assert endpoint.usage.turns == 1
        assert endpoint.usage.input_tokens == message.usage.input_tokens
    assert [r.path for r in scripted.requests] == ["/v1/messages", "/v1/messages/count_tokens"]
    assert all(r.headers["Authorization"] == f"Bearer {REAL_KEY}" for r in scripted.requests)
    assert len(usage_log.calls) == 1


async def test_wrong_token_other_paths_and_methods_are_refused(
    gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path
) -> None:
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        status, body = await raw_post(endpoint, "/v1/messages", token="not-the-token")
        assert status == 401
        assert body["error"]["type"] == "authentication_error"  # type: ignore[index]
        status, _ = await raw_post(endpoint, "/v1/messages", token=None)
        assert status == 401
        status, body = await raw_post(endpoint, "/v1/models", token=endpoint.token)
        assert status == 404
        assert body["type"] == "error"
        status, _ = await raw_post(endpoint, "/v1/messages", token=endpoint.token, method="PUT")
        assert status == 405
        status, body = await raw_post(endpoint, "/v1/messages", token=endpoint.token, json=[1, 2])
        assert status == 400
        with pytest.raises(anthropic.AuthenticationError):
            await sdk(endpoint, token="guess").messages.create(**HELLO)  # type: ignore[arg-type]
    assert scripted.requests == []  # nothing refused reached the upstream


async def test_socket_is_private_single_agent_and_gone_after_exit(
    gateway: ModelGateway, socket_dir: Path
) -> None:
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        assert endpoint.socket_path == socket_dir / "model.sock"
        assert stat.S_IMODE(endpoint.socket_path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(endpoint.socket_path.stat().st_mode)
        with pytest.raises(GatewayError, match="already has a gateway socket"):
            async with gateway.serve_agent("a1", socket_dir.parent / "other", None):
                pass
        with pytest.raises(GatewayError, match="belongs to another agent"):
            async with gateway.serve_agent("a2", socket_dir, None):
                pass
        assert set(gateway.endpoints) == {"a1"}
        # another agent's token does not work on this socket
        async with gateway.serve_agent("a2", socket_dir.parent / "a2", None) as other:
            status, _ = await raw_post(endpoint, "/v1/messages", token=other.token)
            assert status == 401
    assert not endpoint.socket_path.exists()
    assert gateway.endpoints == {}
    with pytest.raises(aiohttp.ClientConnectionError):
        await raw_post(endpoint, "/v1/messages", token=endpoint.token)


async def test_token_budget_refuses_once_exhausted(
    gateway: ModelGateway, scripted: ScriptedModelServer, socket_dir: Path, usage_log: UsageLog
) -> None:
    answers: list[int] = []
    async with gateway.serve_agent("a1", socket_dir, token_budget=400) as endpoint:
        while not answers or answers[-1] == 200:
            status, body = await raw_post(endpoint, "/v1/messages", token=endpoint.token)
            answers.append(status)
        assert endpoint.tokens_used <= 400
        error = body["error"]
        assert error["type"] == "billing_error"  # type: ignore[index]
        assert "token budget exhausted for agent a1" in error["message"]  # type: ignore[index]
    assert answers[-1] == 402 and answers.count(200) >= 2
    forwarded = [r for r in scripted.requests if r.path == "/v1/messages"]
    assert len(forwarded) == len(usage_log.calls) == answers.count(200)


async def test_budget_and_path_checks(gateway: ModelGateway, socket_dir: Path) -> None:
    with pytest.raises(GatewayError, match="positive"):
        async with gateway.serve_agent("a1", socket_dir, token_budget=0):
            pass
    with pytest.raises(GatewayError, match="too long"):
        async with gateway.serve_agent("a1", socket_dir / ("x" * 120), None):
            pass


async def test_unreachable_upstream_gives_a_clean_error_without_the_key(
    usage_log: UsageLog, socket_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = ModelGateway("http://127.0.0.1:9", REAL_KEY, PriceTable.load(), usage_log)
    async with gateway, gateway.serve_agent("a1", socket_dir, None) as endpoint:
        status, body = await raw_post(endpoint, "/v1/messages", token=endpoint.token)
    assert status == 502
    assert body["error"]["type"] == "api_error"  # type: ignore[index]
    assert REAL_KEY not in str(body)
    assert REAL_KEY not in caplog.text
    assert REAL_KEY not in repr(gateway)
    assert "upstream unreachable" in caplog.text


async def test_x_api_key_upstream_and_a_failing_on_usage(
    scripted: ScriptedModelServer, socket_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(agent_id: str, usage: Usage) -> None:
        raise RuntimeError("store down")

    gateway = ModelGateway(
        scripted.url, REAL_KEY, PriceTable.load(), broken, auth_header="x-api-key"
    )
    async with gateway, gateway.serve_agent("a1", socket_dir, None) as endpoint:
        status, _ = await raw_post(endpoint, "/v1/messages", token=endpoint.token)
        assert status == 200
        assert endpoint.usage.turns == 1
    assert scripted.requests[0].headers["x-api-key"] == REAL_KEY
    assert "Authorization" not in scripted.requests[0].headers
    assert "on_usage failed" in caplog.text


async def test_upstream_errors_pass_through(
    gateway: ModelGateway, socket_dir: Path, usage_log: UsageLog
) -> None:
    async with gateway.serve_agent("a1", socket_dir, None) as endpoint:
        status, body = await raw_post(
            endpoint, "/v1/messages", token=endpoint.token, json={"model": "m", "messages": "no"}
        )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert usage_log.calls == []


def test_model_config_problem() -> None:
    assert model_config_problem("key", None) is None
    assert model_config_problem(None, "http://127.0.0.1:8765") is None
    assert model_config_problem("key", "https://api.example") is None
    problem = model_config_problem(None, None)
    assert problem is not None and "CLAUDE_API_KEY" in problem and "ANTHROPIC_BASE_URL" in problem
    assert "http://" in (model_config_problem(None, "ftp://x") or "")


def test_gateway_refuses_to_start_without_key_or_url(
    usage_log: UsageLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    with pytest.raises(GatewayError, match="no model credentials"):
        ModelGateway(None, None, PriceTable.load(), usage_log)
    gateway = ModelGateway(None, "key", PriceTable.load(), usage_log)
    assert gateway.upstream == "https://api.anthropic.com"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1/")
    assert ModelGateway(None, None, PriceTable.load(), usage_log).upstream == "http://127.0.0.1:1"
