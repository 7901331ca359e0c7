"""Three built-in agents in bwrap sandboxes, rate-limited by the model all at once: none fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from core.agents import ScriptedModelServer
from core.agents.scripted import _first_user_text
from tests.agents.conftest import add_script
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator

SLEEP_S = 4
"""Each agent's first tool call sleeps this long: the limit begins while all three sleep."""
LIMIT_S = 6.0
"""Longer than the sleep, so that every agent's next request comes while the limit holds."""


def _task_of(body: Any, tasks: list[str]) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    text = _first_user_text(body["messages"])
    return next((t for t in tasks if t in text), None)


def _turn(body: Any) -> int:
    return sum(1 for m in body["messages"] if isinstance(m, dict) and m.get("role") == "assistant")


async def test_three_agents_rate_limited_at_once_all_complete(
    claude_factory: Any, origin: Path, scripted: ScriptedModelServer, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)
    name = add_script(
        scripted,
        {
            "name": "sleepy-worker",
            "turns": [
                [
                    {
                        "type": "tool_use",
                        "name": "run_command",
                        "input": {"command": f"sleep {SLEEP_S}"},
                    }
                ],
                [
                    {
                        "type": "tool_use",
                        "name": "write_file",
                        "input": {"path": "note.txt", "content": "held, not failed\n"},
                    }
                ],
            ],
            "final": "Waited out the rate limit.",
        },
    )
    tasks = ["T-rl-1", "T-rl-2", "T-rl-3"]
    orch: Orchestrator
    async with claude_factory(max_concurrent_agents=3, orchestrator_queue_concurrency=3) as orch:
        ids = [
            await orch.spawn(task, origin, context={"instructions": f"[script:{name}]"})
            for task in tasks
        ]
        # once every agent has had its first answer (and sleeps), the model refuses everything
        waited_until = time.monotonic() + 90
        while {_task_of(r.body, tasks) for r in scripted.requests} != set(tasks):
            if time.monotonic() > waited_until:
                states = [(await orch.get(f"/agents/{i}/status"))[1] for i in ids]
                raise AssertionError(f"not every agent asked the model: {states}")
            await asyncio.sleep(0.02)
        first_answers = {
            _task_of(r.body, tasks): r.at for r in scripted.requests if _turn(r.body) == 0
        }
        scripted.rate_limit(LIMIT_S)
        start = time.monotonic()
        end = start + LIMIT_S
        shown = None
        while time.monotonic() < end - 0.5 and shown is None:
            code, stats = await orch.get("/queue/stats")
            assert code == 200
            shown = stats.get("rateLimitedUntil")
            await asyncio.sleep(0.1)
        finals = [await orch.wait_status(i, "completed", "failed", timeout=90) for i in ids]
        code, stats = await orch.get("/queue/stats")
    assert [f["status"] for f in finals] == ["completed"] * 3, finals
    assert all(f["summary"] == "Waited out the rate limit." for f in finals)
    assert shown is not None  # the status showed the limit while it held
    assert "rateLimitedUntil" not in stats  # and not once it was over
    assert scripted.limited  # the model really refused ...
    # ... the first request that came; the gateway held the others' without asking (the SDK's own
    # retries would have had each agent refused at least once)
    assert len(scripted.limited) < len(tasks)
    assert all(a.status == 429 for a in scripted.limited)
    for task in tasks:
        # the agent asked again during the limit (its sleep ended before the limit did) ...
        assert start - SLEEP_S <= first_answers[task] < end - SLEEP_S - 0.5, (task, start)
        # ... and got its answer only after it: held by the gateway, not failed
        second = [r.at for r in scripted.requests if _task_of(r.body, tasks) == task]
        answered_after = [
            r.at
            for r in scripted.requests
            if _task_of(r.body, tasks) == task and _turn(r.body) == 1 and r.at >= end - 0.05
        ]
        assert answered_after, (task, second)
