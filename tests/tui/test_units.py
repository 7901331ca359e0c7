"""Pure pieces: formatting, the agent book's sort/filter/CPU, the detail view's result, logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.models import AgentResult, AgentState, AgentStatus, Event, EventType, Usage
from mosaic_tui.book import AgentBook
from mosaic_tui.format import Clock, count, duration, event_text, size, tokens_cost
from mosaic_tui.logbridge import LogBridge
from mosaic_tui.screens.detail import _fields, _result

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def agent(task: str, **kw: object) -> AgentState:
    values: dict[str, object] = {
        "agent_id": f"{task}-0000-id",
        "task_id": task,
        "agent_type": "worker",
        "gate_profile": "standard",
        "spawned_at": T0,
    }
    values.update(kw)
    return AgentState.model_validate(values)


def test_values_read_in_short_units() -> None:
    assert [duration(s) for s in (-3, 42, 185, 7620, 2 * 86400 + 3600)] == [
        "0s",
        "42s",
        "3m05s",
        "2h07m",
        "2d01h",
    ]
    assert duration(None) == "-" and duration(timedelta(seconds=5)) == "5s"
    assert [size(v) for v in (None, 512, 2048, 5 * 1024**2, 3 * 1024**3)] == [
        "-",
        "512B",
        "2K",
        "5.0M",
        "3.0G",
    ]
    assert [count(v) for v in (999, 12_300, 4_500_000)] == ["999", "12.3k", "4.5M"]
    assert tokens_cost(agent("T")) == "-"
    rich = agent("T", usage=Usage(input_tokens=1500, output_tokens=500, cost_usd=0.25))
    assert tokens_cost(rich) == "2.0k $0.25"


def test_event_lines_name_the_step() -> None:
    line = event_text(
        Event(
            type=EventType.GATE_FAILED, agentId="abcdef123456", taskId="T-9", data={"gate": "lint"}
        ),
        Clock(),
    ).plain
    assert "gate.failed" in line and "T-9 (abcdef12)" in line and "gate=lint" in line
    kill = Event(type=EventType.KILLSWITCH_ACTIVATED, data={"by": "ops", "scope": "all"})
    assert "kill all by ops" in event_text(kill, Clock()).plain


def test_book_filters_sorts_and_samples_cpu() -> None:
    book = AgentBook()
    book.replace_all(
        [
            agent("T-a", status="running", resources={"cpu_seconds": 1.0, "runtime_s": 2.0}),
            agent("T-b", status="failed", error="gates: lint failed", completed_at=T0),
        ]
    )
    assert book.cpu_percent("T-a-0000-id") == 50.0
    book.upsert(
        agent("T-a", status="running", resources={"cpu_seconds": 2.0, "runtime_s": 3.0}, version=2)
    )
    assert book.cpu_percent("T-a-0000-id") == 100.0
    assert not book.upsert(agent("T-a", status="running", version=1))  # stale read ignored
    assert book.activity["T-b-0000-id"] == "gates: lint failed"
    book.filter_text = "FAILED"
    assert [a.task_id for a in book.visible()] == ["T-b"]
    book.filter_text = ""
    book.sort_column, book.descending = "status", False
    assert [a.task_id for a in book.visible()] == ["T-a", "T-b"]
    assert book.counts()[AgentStatus.RUNNING] == 1 and book.live_count() == 1
    book.apply_event(
        Event(type=EventType.AGENT_KILLED, agentId="T-a-0000-id", data={"status": "killed"})
    )
    assert book.agents["T-a-0000-id"].status is AgentStatus.KILLED
    assert book.apply_event(Event(type=EventType.GATE_PASSED, agentId="new")) is True
    book.replace_all([])
    assert book.agents == {}


def test_detail_shows_result_gates_scan_and_verdict() -> None:
    done = agent(
        "T-r",
        status="failed",
        error="push: rejected",
        summary="did it",
        worktree="/w",
        resources={"cpu_seconds": 1, "memory_bytes": 2048, "pids": 2, "runtime_s": 9},
        result=AgentResult(
            commit="0123456789abcdef",
            exit_code=0,
            gates=[
                {"name": "lint", "passed": True, "duration_s": 2},
                {"name": "tests", "passed": False, "output": "1 failed"},
                {"name": "build", "skipped": True, "reason": "nothing to run"},
            ],
            scan={"findings": [{"rule": "aws"}]},
            conflicts=["a.py"],
            verdict={"decision": "approve"},
        ),
    )
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(_fields(done, Clock(), 12.0))
    console.print(_result(done))
    text = console.export_text()
    for expected in (
        "push: rejected",
        "did it",
        "mem 2K",
        "commit 0123456789ab",
        "✔ passed",
        "✖ failed",
        "– skipped",
        "1 finding",
        "Conflicts: a.py",
        "Verdict: approve",
    ):
        assert expected in text, expected
    assert _result(agent("T-none")) is None


def test_log_bridge_moves_terminal_logging_to_a_file_and_the_screen(tmp_path: Path) -> None:
    bridge = LogBridge()
    root = logging.getLogger()
    before = list(root.handlers)
    with bridge.capture(tmp_path / "logs" / "dashboard.log"):
        logging.getLogger("core.test").warning("disk nearly full")
        logging.getLogger("core.test").info("quiet detail")
    assert bridge.drain() == ["WARNING core.test: disk nearly full"]
    assert "disk nearly full" in (tmp_path / "logs" / "dashboard.log").read_text()
    assert sorted(map(id, root.handlers)) == sorted(map(id, before))


def test_activity_and_rate_limit_events_read_as_what_happened() -> None:
    activity = Event(
        type=EventType.AGENT_ACTIVITY,
        agentId="abcdef123456",
        taskId="T-7",
        data={"tool": "Bash", "summary": "pytest -q\n  tests/"},
    )
    line = event_text(activity, Clock()).plain
    assert "agent.activity" in line and line.endswith("Bash: pytest -q tests/")
    limited = Event(type=EventType.MODEL_RATE_LIMITED, data={"untilTs": "x", "waitS": 75})
    assert event_text(limited, Clock()).plain.endswith("rate-limited, waiting 1m15s")
    book = AgentBook()
    book.upsert(agent("T-7", agent_id="abcdef123456", last_output="started"))
    assert book.activity["abcdef123456"] == "started"
    assert book.apply_event(activity) is False  # no state to re-read for a tool call
    assert book.activity["abcdef123456"] == "Bash: pytest -q tests/"
    book.upsert(agent("T-7", agent_id="abcdef123456", last_output="started", version=1))
    assert book.activity["abcdef123456"] == "Bash: pytest -q tests/"  # same output: kept
