"""Role prompts, runtime config, result parsing, prices and usage metering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.agents import (
    AgentRuntimeError,
    PriceTable,
    PromptError,
    build_prompts,
    build_runtime_config,
    parse_runtime_output,
    parse_runtime_result,
    runtime_argv,
    runtime_path,
    runtime_ro_binds,
)
from core.agents.usage import UsageMeter
from core.errors import ConfigError


@pytest.mark.parametrize("role", ["worker", "reviewer", "tester"])
def test_prompts_are_built_from_the_role_files(role: str) -> None:
    system, prompt = build_prompts(role, "TASK-7", ["US-1", "US-2"], ["python"], "Be brief.")
    assert "TASK-7" in prompt and "US-1, US-2" in prompt and "Be brief." in prompt
    assert "python" in system
    assert "{{" not in system + prompt
    if role == "reviewer":
        assert "VERDICT: approve" in system


def test_user_text_with_braces_is_not_expanded() -> None:
    _, prompt = build_prompts("worker", "T1", [], [], "use {{task_id}} and {x} literally")
    assert "use {{task_id}} and {x} literally" in prompt
    assert "(none given)" in prompt
    _, prompt = build_prompts("worker", "T1", [], [], None)
    assert "(none)" in prompt


def test_broken_prompt_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="unknown agent type"):
        build_prompts("manager", "T1", [], [], None)
    with pytest.raises(PromptError, match="cannot read prompt file"):
        build_prompts("worker", "T1", [], [], None, prompts_dir=tmp_path)
    (tmp_path / "worker.md").write_text("no sections here")
    with pytest.raises(PromptError, match="needs a"):
        build_prompts("worker", "T1", [], [], None, prompts_dir=tmp_path)
    (tmp_path / "worker.md").write_text("<!-- system -->\nhi {{nope}}\n<!-- prompt -->\nx\n")
    with pytest.raises(PromptError, match=r"unknown placeholder \{\{nope\}\}"):
        build_prompts("worker", "T1", [], [], None, prompts_dir=tmp_path)


def test_runtime_config_and_argv(tmp_path: Path) -> None:
    config = build_runtime_config(
        agent_id="a",
        role="reviewer",
        system="s",
        prompt="p",
        model="m",
        socket=tmp_path / "model.sock",
        token="t",
        workdir=tmp_path,
        transcript=tmp_path / "t.jsonl",
        max_turns=5,
    )
    assert config["role"] == "reviewer"
    assert config["socket"] == str(tmp_path / "model.sock")
    assert config["max_turns"] == 5 and config["max_output_tokens_per_turn"] == 8192
    assert set(config) == {
        "agent_id", "role", "system", "prompt", "model", "socket", "token", "workdir",
        "transcript", "max_turns", "max_tokens", "max_wall_s", "command_timeout_s",
        "max_output_tokens_per_turn",
    }  # fmt: skip
    json.dumps(config)
    with pytest.raises(ValidationError):
        build_runtime_config(
            agent_id="a", role="worker", system="", prompt="p", model="m", socket="s",
            token="t", workdir="w", transcript="x", max_turns=0,
        )  # fmt: skip
    argv = runtime_argv(tmp_path / "c.json", python="/usr/bin/python3")
    assert argv == [
        "/usr/bin/python3",
        "-I",
        str(runtime_path()),
        "--config",
        str(tmp_path / "c.json"),
    ]
    assert runtime_path().name == "runtime.py" and runtime_path().is_file()
    assert runtime_path() in runtime_ro_binds()


def test_runtime_result_parsing() -> None:
    line = json.dumps(
        {
            "status": "completed",
            "summary": "did it",
            "verdict": {"decision": "approve", "comments": ["ok"]},
            "usage": {"input_tokens": 3, "output_tokens": 4, "turns": 1},
            "error": None,
            "budget": None,
        }
    )
    result = parse_runtime_result(line)
    assert result.summary == "did it" and result.verdict is not None
    assert result.verdict.decision == "approve"
    assert result.usage.output_tokens == 4
    assert parse_runtime_output(f"[turn 1] read_file\n{line}\n\n").summary == "did it"
    minimal = parse_runtime_result('{"summary": "x", "verdict": null, "usage": {}}')
    assert minimal.status == "completed" and minimal.verdict is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printed no result line"),
        ("Traceback (most recent call last):", "not a result"),
        ('{"summary": 3}', "summary"),
        ('{"verdict": {"decision": "maybe"}}', "verdict.decision"),
        ("[1, 2]", "not a result"),
    ],
)
def test_garbage_result_lines_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(AgentRuntimeError, match=message):
        parse_runtime_result(text)


def test_empty_output_is_a_clear_error() -> None:
    with pytest.raises(AgentRuntimeError, match="printed nothing"):
        parse_runtime_output("\n \n")
    long = "x" * 500
    with pytest.raises(AgentRuntimeError) as info:
        parse_runtime_result(long)
    assert len(info.value.message) < 400


def test_price_table(tmp_path: Path) -> None:
    prices = PriceTable.load()
    assert prices.price_for("claude-opus-4-5-20251101").input_per_mtok == 5.0
    assert prices.price_for("claude-opus-4-1").input_per_mtok == 15.0
    assert prices.cost("claude-haiku-4-5", 1_000_000, 1_000_000) == pytest.approx(6.0)
    assert prices.price_for("mystery-model") == prices.default
    assert prices.price_for("mystery-model") == prices.default  # warned once
    bad = tmp_path / "p.toml"
    cases = {
        "[default\n": "not valid TOML",
        "[default]\ninput_per_mtok = 1\n": "missing output_per_mtok",
        '[default]\ninput_per_mtok = "a"\noutput_per_mtok = 1\n': "must be numbers",
        "[default]\ninput_per_mtok = -1\noutput_per_mtok = 1\n": "negative",
        "models = 3\n": "must be a table",
        "default = 3\n": "must be a table",
    }
    for content, message in cases.items():
        bad.write_text(content)
        with pytest.raises(ConfigError, match=message):
            PriceTable.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.load(tmp_path / "missing.toml")
    assert PriceTable.from_dict({}).cost("x", 10, 10) == 0.0


SSE = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"usage":{"input_tokens":10,'
    b'"cache_read_input_tokens":5,"output_tokens":1}}}\r\n\r\n'
    b'event: ping\ndata: {"type":"ping"}\n\n'
    b"event: weird\ndata: not json\n\n"
    b"event: nodata\n\n"
    b"data: [1]\n\n"
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":7}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9,'
    b'"input_tokens":12}}\n\n'
)


@pytest.mark.parametrize("split", [1, 7, 50, len(SSE)])
def test_usage_meter_reads_streams_in_any_chunking(split: int) -> None:
    meter = UsageMeter()
    for i in range(0, len(SSE), split):
        meter.feed(SSE[i : i + split])
    assert (meter.input_tokens, meter.output_tokens, meter.seen) == (12, 9, True)


def test_usage_meter_messages_and_garbage() -> None:
    meter = UsageMeter()
    meter.from_message(b"not json")
    meter.from_message(b'{"usage": {"input_tokens": "many", "output_tokens": true}}')
    assert not meter.seen
    meter.from_message(b'{"usage": {"input_tokens": 4, "output_tokens": 2}}')
    assert (meter.input_tokens, meter.output_tokens) == (4, 2)
    flood = UsageMeter()
    flood.feed(b"x" * (UsageMeter.MAX_PENDING + 1))
    assert not flood.seen
