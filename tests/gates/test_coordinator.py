"""CoordinatorGateRunner against a real aiohttp server playing the Coordinator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from core.gates import (
    CoordinatorGateRunner,
    GateConfigError,
    GateStatus,
    LocalGateRunner,
    create_gate_runner,
)
from tests.gates.conftest import Recorder, git, make_python_repo

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeCoordinator:
    """Records every request; ``script`` answers them in turn (the last one repeats)."""

    def __init__(self, *script: Handler) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        handler = self.script[min(len(self.requests), len(self.script)) - 1]
        return await handler(request)


def verdicts(**outcome: bool) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        results = [
            {
                "name": name,
                "passed": outcome.get(name, True),
                "durationMs": 1500,
                "output": f"{name} output",
            }
            for name in body["gates"]
        ]
        return web.json_response({"results": results})

    return handler


def status(code: int, text: str = "boom") -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=code, text=text)

    return handler


def raw(payload: Any) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload)

    return handler


async def hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


@pytest.fixture
async def serve(aiohttp_server: Any) -> Callable[[FakeCoordinator], Awaitable[str]]:
    async def start(fake: FakeCoordinator) -> str:
        app = web.Application()
        app.router.add_post("/coord/gates/evaluate", fake.handle)
        server = await aiohttp_server(app)
        return str(server.make_url("/coord/"))

    return start


def ctx_for(make_ctx: Any, tmp_path: Path, profile: str = "standard", **kw: Any) -> Any:
    return make_ctx(tmp_path, profile, commit="c" * 40, base_sha="b" * 40, **kw)


async def test_pass_posts_the_contract_and_maps_results(
    serve: Any, make_ctx: Any, tmp_path: Path, recorder: Recorder
) -> None:
    fake = FakeCoordinator(verdicts())
    url = await serve(fake)
    runner = CoordinatorGateRunner(url, api_key="s3cret", backoff_s=0)
    results = await runner.run(ctx_for(make_ctx, tmp_path), "post")
    assert [(r.name, r.status) for r in results] == [
        ("tests", GateStatus.PASSED),
        ("coverage", GateStatus.PASSED),
    ]
    assert results[0].duration_s == 1.5 and results[0].output_tail == "tests output"
    [body] = fake.requests
    assert {k: v for k, v in body.items() if k != "requestId"} == {
        "agentId": "agent-1",
        "taskId": "task-1",
        "agentType": "worker",
        "profile": "standard",
        "phase": "post",
        "gates": ["tests", "coverage"],
        "commit": "c" * 40,
        "baseSha": "b" * 40,
        "worktree": str(tmp_path),
        "coverageThreshold": 85.0,
    }
    assert fake.headers[0]["Authorization"] == "Bearer s3cret"
    assert recorder.types() == ["gate.started"] * 2 + ["gate.passed"] * 2


async def test_fail_is_reported_per_gate(
    serve: Any, make_ctx: Any, tmp_path: Path, recorder: Recorder
) -> None:
    url = await serve(FakeCoordinator(verdicts(lint=False)))
    results = await CoordinatorGateRunner(url).run(ctx_for(make_ctx, tmp_path), "pre")
    got = {r.name: r for r in results}
    assert got["typecheck"].status is GateStatus.PASSED
    assert got["lint"].status is GateStatus.FAILED and got["lint"].blocking
    assert got["lint"].reason == "failed on the coordinator (no reason given)"
    assert recorder.types()[-2:] == ["gate.passed", "gate.failed"]


async def test_500_then_pass_is_retried_with_the_same_request_id(
    serve: Any, make_ctx: Any, tmp_path: Path
) -> None:
    fake = FakeCoordinator(status(500), status(503), verdicts())
    url = await serve(fake)
    results = await CoordinatorGateRunner(url, retries=4, backoff_s=0.01).run(
        ctx_for(make_ctx, tmp_path), "post"
    )
    assert all(r.status is GateStatus.PASSED for r in results)
    assert len(fake.requests) == 3
    assert len({r["requestId"] for r in fake.requests}) == 1


async def test_400_is_not_retried(serve: Any, make_ctx: Any, tmp_path: Path) -> None:
    fake = FakeCoordinator(status(400, '{"error": "unknown gate"}'))
    url = await serve(fake)
    results = await CoordinatorGateRunner(url, retries=4, backoff_s=0.01).run(
        ctx_for(make_ctx, tmp_path), "post"
    )
    assert len(fake.requests) == 1
    for result in results:
        assert result.status is GateStatus.ERROR
        assert result.reason == (
            'coordinator rejected the request: HTTP 400: {"error": "unknown gate"}'
        )


async def test_hanging_coordinator_times_out_and_every_gate_errors(
    serve: Any, make_ctx: Any, tmp_path: Path, recorder: Recorder
) -> None:
    fake = FakeCoordinator(hang)
    url = await serve(fake)
    runner = CoordinatorGateRunner(url, timeout_s=0.2, retries=2, backoff_s=0.01)
    results = await runner.run(ctx_for(make_ctx, tmp_path), "post")
    assert len(fake.requests) == 3
    for result in results:
        assert result.status is GateStatus.ERROR
        assert result.reason == "coordinator unreachable after 3 attempts: no answer within 0.2s"
    assert recorder.types()[-2:] == ["gate.failed", "gate.failed"]


async def test_coordinator_down_is_a_clear_error(make_ctx: Any, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runner = CoordinatorGateRunner(f"http://127.0.0.1:{port}", retries=1, backoff_s=0.01)
    results = await runner.run(ctx_for(make_ctx, tmp_path), "pre")
    assert [r.status for r in results] == [GateStatus.ERROR] * 2
    reason = results[0].reason or ""
    assert reason.startswith("coordinator unreachable after 2 attempts: ClientConnectorError")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"results": "nope"}, "malformed coordinator answer at results"),
        ({"results": [{"name": "tests"}]}, "malformed coordinator answer at results.0.passed"),
        ([1, 2], "malformed coordinator answer"),
    ],
)
async def test_malformed_answer_is_an_error(
    serve: Any, make_ctx: Any, tmp_path: Path, payload: Any, reason: str
) -> None:
    url = await serve(FakeCoordinator(raw(payload)))
    results = await CoordinatorGateRunner(url).run(ctx_for(make_ctx, tmp_path, "minimal"), "post")
    assert results[0].status is GateStatus.ERROR
    assert (results[0].reason or "").startswith(reason)


async def test_missing_and_explicit_status_results(
    serve: Any, make_ctx: Any, tmp_path: Path
) -> None:
    payload = {
        "results": [
            {"name": "tests", "passed": True, "status": "skipped", "reason": "no tests"},
            {"name": "extra", "passed": True},
        ]
    }
    url = await serve(FakeCoordinator(raw(payload)))
    ctx = ctx_for(make_ctx, tmp_path, agent_type="reviewer")
    results = await CoordinatorGateRunner(url).run(ctx, "post")
    got = {r.name: r for r in results}
    assert got["tests"].status is GateStatus.SKIPPED and got["tests"].reason == "no tests"
    assert not got["tests"].blocking
    assert got["coverage"].status is GateStatus.ERROR
    assert got["coverage"].reason == "the coordinator returned no result for this gate"


async def test_non_200_success_code_is_an_error(serve: Any, make_ctx: Any, tmp_path: Path) -> None:
    url = await serve(FakeCoordinator(status(202, "accepted")))
    [result] = await CoordinatorGateRunner(url).run(ctx_for(make_ctx, tmp_path, "minimal"), "post")
    assert result.reason == "coordinator answered HTTP 202, expected 200: accepted"


async def test_phase_without_gates_makes_no_request(
    serve: Any, make_ctx: Any, tmp_path: Path
) -> None:
    fake = FakeCoordinator(verdicts())
    url = await serve(fake)
    assert await CoordinatorGateRunner(url).run(ctx_for(make_ctx, tmp_path, "minimal"), "pre") == []
    assert fake.requests == []


async def test_setup_errors_are_reported_without_a_request(
    serve: Any, make_ctx: Any, tmp_path: Path
) -> None:
    fake = FakeCoordinator(verdicts())
    url = await serve(fake)
    runner = CoordinatorGateRunner(url)
    [custom] = await runner.run(make_ctx(tmp_path, "custom"), "post")
    assert custom.status is GateStatus.ERROR and custom.reason == "profile 'custom' names no gates"
    [no_commit] = await runner.run(make_ctx(tmp_path, "custom", base_sha="b" * 40), "post")
    assert no_commit.status is GateStatus.ERROR and "not found" in (no_commit.reason or "")
    [bad] = await runner.run(ctx_for(make_ctx, tmp_path, "loose"), "post")
    assert "unknown gate profile 'loose'" in (bad.reason or "")
    assert fake.requests == []


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    runner = CoordinatorGateRunner("http://127.0.0.1:1", backoff_s=0.5)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (10, 10.0)]:
        delays = [runner._delay(attempt) for _ in range(50)]
        assert all(base <= d <= 2 * base for d in delays)
        assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("url", "kw"),
    [
        ("ftp://coord", {}),
        ("not a url", {}),
        ("http://c", {"timeout_s": 0}),
        ("http://c", {"retries": -1}),
    ],
)
def test_bad_settings_are_a_clear_config_error(url: str, kw: dict[str, Any]) -> None:
    with pytest.raises(GateConfigError):
        CoordinatorGateRunner(url, **kw)


def test_create_gate_runner_chooses_by_coordinator_url() -> None:
    remote = create_gate_runner("http://coord:8080/", retries=2, api_key="k")
    assert isinstance(remote, CoordinatorGateRunner)
    assert remote.endpoint == "http://coord:8080/gates/evaluate" and remote.attempts == 3
    assert isinstance(create_gate_runner(None), LocalGateRunner)
    assert isinstance(create_gate_runner("  ", retries=2, api_key=None), LocalGateRunner)


async def test_custom_profile_sends_the_repository_list_and_threshold(
    serve: Any, make_ctx: Any, tmp_path: Path
) -> None:
    repo = make_python_repo(
        tmp_path / "repo", gates_toml='coverage_threshold = 70\n[gates]\ncoverage = "x"\n'
    )
    fake = FakeCoordinator(verdicts())
    url = await serve(fake)
    base = git(repo, "rev-parse", "HEAD")
    [result] = await CoordinatorGateRunner(url).run(make_ctx(repo, "custom", base_sha=base), "post")
    assert result.name == "coverage" and result.status is GateStatus.PASSED
    assert fake.requests[0]["gates"] == ["coverage"]
    assert fake.requests[0]["coverageThreshold"] == 70


async def test_a_skip_the_coordinator_reports_blocks_a_worker_unless_the_base_disables_it(
    serve: Any, make_ctx: Any, tmp_path: Path, recorder: Recorder
) -> None:
    # SPEC §17 holds whoever evaluates the gates: the orchestrator applies the rule to answers
    payload = {
        "results": [
            {"name": "tests", "passed": True, "status": "skipped", "reason": "no tests"},
            {"name": "coverage", "passed": True, "status": "skipped", "reason": "no tests"},
        ]
    }
    url = await serve(FakeCoordinator(raw(payload)))
    repo = make_python_repo(tmp_path / "repo", gates_toml="[gates]\ncoverage = false\n")
    base = git(repo, "rev-parse", "HEAD")
    (repo / ".mosaic" / "gates.toml").write_text("[gates]\ntests = false\ncoverage = false\n")
    ctx = make_ctx(repo, "standard", base_sha=base, commit=base)
    got = {r.name: r for r in await CoordinatorGateRunner(url).run(ctx, "post")}
    assert got["tests"].required and got["tests"].blocking  # the agent's edit does not count
    assert (got["tests"].reason or "").startswith("no tests; the standard profile requires tests")
    assert not got["coverage"].required and not got["coverage"].blocking  # disabled at the base
    assert got["coverage"].reason == "no tests"
    finished = {d["gate"]: e for e, d in recorder.events if e != "gate.started"}
    assert finished == {"tests": "gate.failed", "coverage": "gate.passed"}
    reviewer = make_ctx(repo, "standard", base_sha=base, commit=base, agent_type="reviewer")
    assert not any(r.blocking for r in await CoordinatorGateRunner(url).run(reviewer, "post"))
