"""The dashboard in a real browser: headless Chromium, driven over the Chrome DevTools Protocol.

A real engine and API run two live agents; ``mosaic-orchestrator web URL`` serves the dashboard;
Chromium opens it with the key once, reads the terminal's text, selects one agent with the arrow
keys, presses ``k`` and ``y``, and the API must then say that exactly that agent was killed.
``MOSAIC_UPDATE_SCREENSHOTS=1`` also saves the screenshot as ``docs/screenshots/web.png``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from core.models import AgentStatus
from tests.spine.conftest import OrchestratorFactory
from tests.tui.conftest import request, until, wait_status

KEY = "browser-test-key"
AGENT = "echo working-line; sleep 120"
SIZE = (1120, 640)  # CSS pixels of the page: about 116x33 cells at font size 15
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "screenshots" / "web.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (.ci/setup.d/50-chromium.sh installs it)"
)

# textual-serve keeps its xterm.js Terminal in a closure; this catches it as the page's script
# assigns it (``this.terminal = new Terminal(...)``) so the test can read the screen's text with
# xterm's public buffer API. Any other ``terminal`` property is left as a plain property.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal",
      {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer && value.onData) { window.__terminal = value; }
  },
});
"""
SCREEN_TEXT = """
(() => {
  const t = window.__terminal;
  if (!t) return "";
  const lines = [];
  for (let i = 0; i < t.rows; i++) {
    const line = t.buffer.active.getLine(i);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\\n");
})()
"""
OPEN_SOCKET = """
new Promise((answer) => {
  const socket = new WebSocket("ws://127.0.0.1:%d/ws");
  socket.onopen = () => answer("opened");
  socket.onerror = () => answer("refused");
})
"""
KEYS = {
    "Enter": {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
    "ArrowDown": {"key": "ArrowDown", "code": "ArrowDown", "windowsVirtualKeyCode": 40},
    "ArrowUp": {"key": "ArrowUp", "code": "ArrowUp", "windowsVirtualKeyCode": 38},
}


@dataclass
class DevTools:
    """A Chrome DevTools Protocol session with one page, over aiohttp's websocket client."""

    socket: aiohttp.ClientWebSocketResponse
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    next_id: int = 0
    reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            future = self.pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self.pending.values():
            future.set_exception(ConnectionError("DevTools connection closed"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.socket.send_json({"id": self.next_id, "method": method, "params": params})
        async with asyncio.timeout(15):
            reply = await future
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return result["result"].get("value")

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await until(
            lambda: self.evaluate(f"location.href === {json.dumps(url)} && document.readyState"),
            what=f"{url} loaded",
        )

    async def screen(self) -> str:
        return str(await self.evaluate(SCREEN_TEXT) or "")

    async def press(self, key: str) -> None:
        event = KEYS.get(key) or {"key": key, "text": key, "unmodifiedText": key}
        await self.send("Input.dispatchKeyEvent", type="keyDown", **event)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **{"key": event["key"]})


@contextlib.asynccontextmanager
async def other_origin() -> AsyncIterator[str]:
    """A page on another loopback port: what a local dev server or a hostile tab would be."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<p>elsewhere</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def process_group(
    argv: list[str], log: Path, **kw: Any
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``argv`` in its own process group; the whole group is SIGTERMed, then SIGKILLed, at exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
        )
    try:
        yield proc
    finally:
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, wait_s)
                if sig == signal.SIGTERM:  # the leader is gone; its group may not be
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                break


@contextlib.asynccontextmanager
async def chromium(profile: Path, log: Path) -> AsyncIterator[DevTools]:
    assert CHROMIUM is not None
    argv = [
        CHROMIUM,
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={SIZE[0]},{SIZE[1]}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-sync",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP rebound.test 127.0.0.1",  # a DNS-rebinding name
        "about:blank",
    ]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    async with process_group(argv, log) as proc, aiohttp.ClientSession() as http:
        active = profile / "DevToolsActivePort"
        await until(
            lambda: proc.poll() is not None or (active.is_file() and bool(active.read_text())),
            timeout=20,
            what="Chromium's DevTools port",
        )
        assert proc.poll() is None, log.read_text()[-2000:]
        port = active.read_text().split()[0]
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as resp:
            target = await resp.json()
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = DevTools(ws)
            tools.start()
            try:
                yield tools
            finally:
                await ws.close()
                if tools.reader is not None:
                    await tools.reader


async def test_the_browser_sees_the_agents_and_kills_the_selected_one_with_keys(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    async with orchestrator_factory(
        mosaic_agent_command=AGENT,
        orchestrator_api_key=KEY,
        max_concurrent_agents=3,
        orchestrator_queue_concurrency=3,
    ) as orch:
        tasks = ["T-doomed", "T-kept", "T-docs"]
        ids = {t: (await orch.engine.spawn(request(t, origin))).agent_id for t in tasks}
        for agent_id in ids.values():
            await wait_status(orch.engine, agent_id, AgentStatus.RUNNING)
        port = free_port()
        web = [sys.executable, "-m", "mosaic_tui", "web", orch.url, "--port", str(port)]
        env = {**os.environ, "ORCHESTRATOR_API_KEY": KEY}  # never in argv
        web_log = tmp_path / "web.log"
        async with (
            process_group(web, web_log, env=env, cwd=REPO),
            chromium(tmp_path / "profile", tmp_path / "chromium.log") as page,
        ):
            await until(lambda: "dashboard on" in web_log.read_text(), what="web server up")
            await page.send("Page.enable")
            await page.send("Runtime.enable")
            await page.send("Page.addScriptToEvaluateOnNewDocument", source=CATCH_TERMINAL)
            await page.send(
                "Emulation.setDeviceMetricsOverride",
                width=SIZE[0],
                height=SIZE[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            await page.send(
                "Page.navigate", url=f"http://127.0.0.1:{port}/?fontsize=15&token={KEY}"
            )

            async def shows(*words: str) -> bool:
                text = await page.screen()
                return all(word in text for word in words)

            try:
                await until(lambda: shows(*tasks, "running"), timeout=30, what="agents on screen")
            except AssertionError:
                state = await page.evaluate(
                    "JSON.stringify({t: !!window.__terminal, body: document.body.className,"
                    " url: location.href, html: document.body.innerHTML.slice(0, 500)})"
                )
                raise AssertionError(
                    f"page: {state}\nscreen:\n{await page.screen()}\n"
                    f"web log:\n{web_log.read_text()[-3000:]}"
                ) from None
            assert await page.evaluate("location.search") == "?fontsize=15"  # token dropped
            assert KEY not in str(await page.evaluate("document.documentElement.outerHTML"))
            await page.evaluate("window.__terminal.focus()")

            # select T-doomed with the arrow keys: to the top, then down to its row (read the rows
            # from one whole frame: a screen read during a repaint may catch it half drawn)
            rows: list[str] = []

            async def rows_shown() -> bool:
                nonlocal rows
                lines = (await page.screen()).splitlines()
                rows = [ln for ln in lines if "worker" in ln and any(t in ln for t in tasks)]
                return len(rows) == len(tasks)

            await until(rows_shown, timeout=30, what="one row per agent")
            index = next(i for i, line in enumerate(rows) if "T-doomed" in line)
            for _ in range(len(tasks)):
                await page.press("ArrowUp")
            for _ in range(index):
                await page.press("ArrowDown")
            await page.press("k")
            await until(lambda: shows("Kill agent"), what="the kill dialog")
            screen = await page.screen()
            assert "task T-doomed" in screen, screen
            shot = await page.send("Page.captureScreenshot", format="png")
            await page.press("y")
            await wait_status(orch.engine, ids["T-doomed"], AgentStatus.KILLED)
            await until(lambda: shows("killed"), what="the killed row")

            # a page of another origin on this machine: the browser sends it the cookie (same
            # site: ports do not count) and its Origin, which the server refuses
            async with other_origin() as elsewhere:
                await page.open(elsewhere)
                assert await page.evaluate(OPEN_SOCKET % port) == "refused"
            # DNS rebinding: a name of the attacker's that resolves to this machine
            await page.open(f"http://rebound.test:{port}/")
            assert "forbidden_host" in await page.evaluate("document.body.innerText")
            assert 'GET /ws" 403' in web_log.read_text()

        png = tmp_path / "web.png"
        png.write_bytes(base64.b64decode(shot["data"]))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("MOSAIC_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(png, SCREENSHOT)
        states = {t: (await orch.engine.status(a)).status for t, a in ids.items()}
        assert states == {
            "T-doomed": AgentStatus.KILLED,
            "T-kept": AgentStatus.RUNNING,
            "T-docs": AgentStatus.RUNNING,
        }
        code, data = await orch.get(
            f"/agents/{ids['T-doomed']}/status", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert code == 200 and data["status"] == "killed"
