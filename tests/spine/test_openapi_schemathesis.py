"""Schemathesis, with every check, against the real server on loopback (SPEC §18).

What ``schemathesis run URL/openapi.json --checks all`` does, inside pytest: the coverage,
fuzzing and stateful phases generate requests from ``/openapi.json`` and every check holds:
no 5xx, each answer's status, media type, headers and body as documented, every schema-valid
request accepted, every schema-invalid one refused, 405 with ``Allow``, 401 exactly when an API
key is set. The engine is the real one (``none`` sandbox, an agent command that exits at
once); spawns it accepts run and end, and none is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import redis
import requests
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks

from tests.spine.conftest import make_settings, running

load_all_checks()
ALL_CHECKS = CHECKS.get_all()  # `--checks all`
KEY = "st-key"
FAST_FAIL_GIT = """\
[url "file:///nonexistent/"]
\tinsteadOf = http://
\tinsteadOf = https://
\tinsteadOf = git://
\tinsteadOf = ssh://
\tinsteadOf = git+ssh://
\tinsteadOf = ssh+git://
"""


class Live:
    """An orchestrator (engine + API) on its own event loop in a thread, for synchronous tests."""

    def __init__(self, root: Path, valkey_url: str, api_key: str | None) -> None:
        self.settings = make_settings(
            root,
            valkey_url,
            mosaic_agent_command="true",
            max_concurrent_agents=1,
            orchestrator_queue_concurrency=1,
            queue_attempts=1,
            orchestrator_api_key=api_key,
        )
        self.key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="live-orchestrator", daemon=True)

    def __enter__(self) -> Live:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or not self.url:
            raise RuntimeError(f"the orchestrator did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the orchestrator did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        async with running(self.settings) as orch:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.url = orch.url
            self._ready.set()
            await self._stop.wait()

    def get(self, path: str) -> Any:
        response = requests.get(self.url + path, headers=self.headers, timeout=30)
        response.raise_for_status()
        return response.json()

    def kill_all_and_wait(self) -> None:
        requests.post(self.url + "/agents/kill-all", headers=self.headers, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            live = [
                a for a in self.get("/agents")["agents"] if a["status"] in ("spawning", "running")
            ]
            if not live or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert live == [], live


@pytest.fixture(scope="module", params=[None, KEY], ids=["no-key", "api-key"])
def live(
    request: pytest.FixtureRequest, valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("openapi")
    # Spawns schemathesis makes name random remote repositories: git fails on them at once
    # instead of connecting anywhere (ssh: GIT_SSH_COMMAND; the others: url.insteadOf)
    (root / "xdg" / "git").mkdir(parents=True)
    (root / "xdg" / "git" / "config").write_text(FAST_FAIL_GIT)
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "GIT_SSH_COMMAND")}
    os.environ.update(XDG_CONFIG_HOME=str(root / "xdg"), GIT_SSH_COMMAND="false")
    redis.Redis.from_url(valkey_url).flushall()
    try:
        with Live(root, valkey_url, request.param) as server:
            yield server
            server.kill_all_and_wait()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "seed": 14,
            "auth": {"openapi": {"bearer": {"bearer": live.key}}} if live.key else {},
            "generation": {"max-examples": 15, "database": "none"},
            "phases": {"stateful": {"max-steps": 8}},
            "operations": [
                # an event stream never ends: read it briefly
                {"include-path": "/agents/events", "request-timeout": 0.3, "max-stream-events": 3}
            ],
        }
    )
    return schemathesis.openapi.from_url(
        live.url + "/openapi.json", config=config, headers=live.headers
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(
    deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=ALL_CHECKS)


def test_the_stateful_phase_finds_nothing(api_schema: Any, live: Live) -> None:
    workflow = api_schema.as_state_machine()
    workflow.run(
        settings=hypothesis.settings(
            max_examples=6,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
    )


def test_no_agent_is_left_running(live: Live) -> None:
    with contextlib.suppress(requests.RequestException):
        live.kill_all_and_wait()
    stats = live.get("/queue/stats")
    assert stats["live_agents"] == 0, stats
