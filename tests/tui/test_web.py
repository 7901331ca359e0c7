"""``mosaic-orchestrator web``: the guard, the key, and one real session over a real websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from core.errors import ConfigError
from core.models import AgentStatus
from mosaic_tui.cli import main
from mosaic_tui.web import WebConfig, page_url, reachable_url, run_web_command, serve_web
from tests.spine.conftest import OrchestratorFactory, make_settings
from tests.tui.conftest import LONG_AGENT, request, until, wait_status

KEY = "s3cret-web-key"
NOWHERE = "http://127.0.0.1:9"  # the guard and the key are checked before any session starts


@contextlib.asynccontextmanager
async def web_server(
    api_url: str = NOWHERE, api_key: str | None = KEY, **extra: object
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    config = WebConfig(api_url=api_url, api_key=api_key, port=0, **extra)  # type: ignore[arg-type]
    async with serve_web(config) as runner, aiohttp.ClientSession() as http:
        yield page_url(runner), http


def bearer(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_foreign_host_is_refused_on_every_route_and_the_websocket() -> None:
    async with web_server() as (url, http):
        for path in ("", "ws", "static/js/textual.js", f"?token={KEY}"):
            async with http.get(url + path, headers={"Host": "evil.example:3002"}) as resp:
                assert resp.status == 403, path
                assert (await resp.json())["error"]["code"] == "forbidden_host"
        # DNS rebinding: evil.example resolving to 127.0.0.1 still sends its own name
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "ws", headers={"Host": "evil.example", **bearer()})
        assert refused.value.status == 403


async def test_a_foreign_origin_cannot_open_the_websocket() -> None:
    async with web_server(api_key=None) as (url, http):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "ws", origin="http://evil.example")
        assert refused.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "ws", origin="null")
        assert refused.value.status == 403
        async with http.get(url, headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "forbidden_origin"
        async with http.get(url) as resp:  # no key configured: loopback is open
            assert resp.status == 200


async def test_with_a_key_the_page_the_assets_and_the_websocket_need_it() -> None:
    async with web_server() as (url, http):
        for path in ("", "ws", "static/js/textual.js", "?token=wrong", "?token="):
            async with http.get(url + path, allow_redirects=False) as resp:
                assert resp.status == 401, path
                assert resp.headers["WWW-Authenticate"] == "Bearer"
                assert "?token=" in (await resp.json())["error"]["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "ws")
        assert refused.value.status == 401
        async with http.get(url, headers=bearer("wrong")) as resp:
            assert resp.status == 401
        async with http.get(url, headers=bearer()) as resp:
            assert resp.status == 200


async def test_the_token_once_becomes_a_strict_http_only_cookie_and_leaves_the_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with web_server() as (url, http):
        async with http.get(f"{url}?fontsize=12&token={KEY}", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/?fontsize=12"
            port = url.rstrip("/").rsplit(":", 1)[1]
            cookie = resp.cookies[f"mosaic_web_{port}"]
            set_cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert cookie.value and KEY not in cookie.value  # a per-server secret, not the key
        jar = {cookie.key: cookie.value}
        async with http.get(url, cookies=jar) as resp:
            assert resp.status == 200
            page = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Frame-Options"] == "DENY"
        assert KEY not in page
        host_port = url.removeprefix("http://").rstrip("/")
        assert f'data-session-websocket-url="ws://{host_port}/ws"' in page
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        async with http.get(url + "static/js/textual.js", cookies=jar) as resp:
            assert resp.status == 200
        async with http.get(url, cookies={cookie.key: "forged"}) as resp:
            assert resp.status == 401
        # the redirect goes to the page, whatever path came with the token (no open redirect)
        async with http.get(f"{url}/evil.example/?token={KEY}", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
    assert "GET /" in caplog.text and KEY not in caplog.text  # the access log drops queries


async def test_a_browser_session_is_an_attached_dashboard_holding_the_key_in_its_environment(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(
        mosaic_agent_command=LONG_AGENT, orchestrator_api_key=KEY
    ) as orch:
        agent = (await orch.engine.spawn(request("T-webview", origin))).agent_id
        await wait_status(orch.engine, agent, AgentStatus.RUNNING)
        async with web_server(orch.url) as (url, http):
            socket = await http.ws_connect(url + "ws?width=120&height=30", headers=bearer())
            try:
                screen = await _read_until(socket, b"T-webview")
                assert b"running" in screen
                sessions = _session_processes()
                assert len(sessions) == 1
                process = sessions[0]
                assert process.ppid() == os.getpid()  # exec: no shell left between
                assert KEY not in " ".join(process.cmdline())  # ps shows argv, not the env
                assert process.environ()["ORCHESTRATOR_API_KEY"] == KEY
                await socket.send_json(["resize", {"width": 100, "height": 28}])
                await socket.send_json(["blur"])
                await socket.send_json(["focus"])
                await socket.send_json(["ping", "p1"])
                await socket.send_str("not json")  # dropped, the session carries on
                await socket.send_json(["stdin", "q"])  # attached: q detaches at once
                async with asyncio.timeout(15):
                    while (await socket.receive()).type not in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                    ):
                        pass
                await until(lambda: not process.is_running(), what="session process ends")
            finally:
                await socket.close()
        assert _session_processes() == []
        assert (await orch.engine.status(agent)).status is AgentStatus.RUNNING


async def test_stopping_the_server_stops_open_sessions(
    orchestrator_factory: OrchestratorFactory,
) -> None:
    async with (
        orchestrator_factory(orchestrator_api_key=KEY) as orch,
        aiohttp.ClientSession() as browser,  # outlives the server: the server ends the session
    ):
        async with web_server(orch.url) as (url, _):
            socket = await browser.ws_connect(url + "ws", headers=bearer())
            await _read_until(socket, b"Mosaic")
            assert len(_session_processes()) == 1
        assert _session_processes() == []
        closing = await socket.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert closing.type is aiohttp.WSMsgType.CLOSED or closing.data == 1001  # going away


async def test_a_session_whose_dashboard_cannot_start_ends_instead_of_hanging() -> None:
    async with web_server(api_key=None) as (url, http):  # NOWHERE: attach fails at once
        socket = await http.ws_connect(url + "ws")
        async with asyncio.timeout(30):
            while (await socket.receive()).type is not aiohttp.WSMsgType.CLOSE:
                pass
        await until(lambda: _session_processes() == [], what="the session process gone")


async def test_sessions_are_capped_and_odd_query_values_fall_back() -> None:
    async with web_server(api_key=None, max_sessions=0) as (url, http):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url + "ws?width=x&height=-5")
        assert refused.value.status == 503
        async with http.get(url + "?fontsize=huge") as resp:
            assert 'data-font-size="16"' in await resp.text()
        async with http.get(url + "?fontsize=4000") as resp:
            assert 'data-font-size="48"' in await resp.text()


async def test_a_busy_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with serve_web(WebConfig(api_url=NOWHERE, port=port)):
                pass


def test_sessions_reach_an_in_process_api_on_loopback_when_it_listens_everywhere() -> None:
    assert reachable_url("0.0.0.0", 3001) == "http://127.0.0.1:3001"
    assert reachable_url("::", 3001) == "http://[::1]:3001"
    assert reachable_url("10.1.2.3", 3001) == "http://10.1.2.3:3001"
    config = WebConfig(api_url="http://127.0.0.1:3001", api_key=KEY, python="/usr/bin/python3")
    assert config.session_command() == (
        "exec /usr/bin/python3 -m mosaic_tui attach http://127.0.0.1:3001"
    )
    environment = {"ORCHESTRATOR_API_KEY": "old", "A": "1", "CLAUDE_API_KEY": "sk-ant-x"}
    assert config.session_environment(environment) == {
        "ORCHESTRATOR_API_KEY": KEY,
        "A": "1",
    }
    keyless = WebConfig(api_url="http://127.0.0.1:3001")
    assert keyless.session_environment({"ORCHESTRATOR_API_KEY": "old"}) == {}


async def test_without_a_url_web_runs_the_engine_and_api_too_and_sessions_attach_to_them(
    tmp_path: Path, valkey_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, valkey_url, orchestrator_api_key=KEY)
    seen: list[bytes] = []

    async def use_it() -> None:
        out = capsys.readouterr().out
        api = re.search(r"engine and API on (http://\S+)", out)
        page = re.search(r"dashboard on (http://\S+/)", out)
        assert api and page, out
        async with aiohttp.ClientSession() as http:
            async with http.get(api[1] + "/queue/stats", headers=bearer()) as resp:
                assert resp.status == 200  # the in-process API, with the same key
            socket = await http.ws_connect(page[1] + "ws", headers=bearer())
            seen.append(await _read_until(socket, b"Queue"))
            assert len(_session_processes()) == 1
            await socket.close()

    await run_web_command(settings, url=None, host="127.0.0.1", port=0, token=None, until=use_it)
    assert seen and b"attached" in seen[0]
    assert "stopping (killing live agents)" in capsys.readouterr().out
    await until(lambda: _session_processes() == [], what="session processes end")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["web", "ftp://somewhere"], "must be like http://host:3001"),
        (["web", "--port", "70000", "http://127.0.0.1:9"], "invalid web port 70000"),
        (["web", "http://127.0.0.1:9"], "cannot reach the orchestrator"),
    ],
)
def test_bad_web_arguments_get_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


async def _read_until(socket: aiohttp.ClientWebSocketResponse, needle: bytes) -> bytes:
    screen = b""
    async with asyncio.timeout(30):
        while needle not in screen:
            message = await socket.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                screen += message.data
            elif message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"session ended early: {message!r}; saw {screen[-500:]!r}")
    return screen


def _session_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            argv = child.cmdline()
            if "mosaic_tui" in argv and "attach" in argv:
                found.append(child)
    return found
