"""Claude Code's stream-json, argv, env and binds (``core.agents.claude_code``).

The streams are real: recorded from ``claude`` 2.1.332 run as uid 64000 against the scripted
model (``tests/agents/fixtures/claude_code/``, see its README); the fake secret is stored as its
``{{placeholder}}`` and filled in here, so the repository holds no key-shaped literal.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from core.agents.claude_code import (
    SUMMARY_MAX,
    Activity,
    StreamParser,
    claude_argv,
    claude_binds,
    claude_env,
    find_claude,
)
from core.agents.scripts import FAKE_VALUES, expand

FIXTURES = Path(__file__).parent / "fixtures" / "claude_code"
SECRET = FAKE_VALUES["fake_aws_secret"]


def stream(name: str) -> list[str]:
    text: str = expand((FIXTURES / f"{name}.jsonl").read_text())
    return text.splitlines()


def parse(name: str, cwd: str | None = None) -> tuple[StreamParser, list[Activity]]:
    parser = StreamParser(cwd=cwd)
    activities: list[Activity] = []
    for line in stream(name):
        activities += parser.feed(line)
    return parser, activities


# -- the recorded streams -----------------------------------------------------------------------


def test_worker_stream_gives_activities_session_and_result() -> None:
    parser, activities = parse("worker")
    assert activities == [Activity("Write", "hello.txt"), Activity("Bash", "cat hello.txt && ls")]
    assert parser.cwd == "/tmp/mosaic-wt"  # from system/init
    assert parser.session_id == "4432ca3e-93ef-43d9-b767-bac1fbf44bc5"
    result = parser.result
    assert result is not None
    assert result.summary == "Added hello.txt with a greeting and checked it."
    assert (result.turns, result.is_error, result.error, result.budget) == (3, False, None, None)
    assert result.usage.input_tokens == 37846 and result.usage.output_tokens == 112
    assert result.cost_usd == pytest.approx(0.153624) == result.usage.cost_usd
    assert result.usage.turns == 3 and result.session_id == parser.session_id
    assert parser.verdict() is None
    runtime = parser.runtime_result("worker")
    assert runtime.status == "completed" and runtime.verdict is None and runtime.error is None
    assert runtime.usage == result.usage


def test_reviewer_verdict_parses_into_the_builtin_verdict() -> None:
    parser, activities = parse("reviewer")
    assert activities == [
        Activity("Bash", "git log --oneline -3 || ls"),
        Activity("Read", "hello.txt"),
    ]
    verdict = parser.verdict()
    assert verdict is not None
    assert verdict.decision == "approve"
    assert verdict.comments == ["Clear naming", "Nothing to fix"]
    assert parser.runtime_result("reviewer").verdict == verdict
    assert parser.runtime_result("worker").verdict is None  # only a reviewer has one


def test_a_secret_in_a_bash_command_is_masked() -> None:
    assert any(SECRET in line for line in stream("leaky_bash"))  # the real stream carried it
    _, activities = parse("leaky_bash")
    assert len(activities) == 1
    summary = activities[0].summary
    assert activities[0].tool == "Bash"
    assert SECRET not in summary and SECRET[8:20] not in summary
    assert summary.startswith("AWS_SECRET_ACCESS_KEY=") and "****" in summary
    assert summary.endswith("sh -c 'echo configured'")


def test_max_turns_is_a_turns_budget_failure() -> None:
    parser, activities = parse("max_turns")
    assert [a.tool for a in activities] == ["run_command", "run_command"]
    result = parser.result
    assert result is not None and result.is_error
    assert result.subtype == "error_max_turns" and result.budget == "turns"
    assert result.error == "Reached maximum number of turns (2)"
    assert result.summary == ""
    runtime = parser.runtime_result("worker")
    assert (runtime.status, runtime.budget) == ("failed", "turns")


def test_an_api_error_fails_with_its_message() -> None:
    parser, activities = parse("api_error")
    assert activities == []
    result = parser.result
    assert result is not None and result.is_error and result.subtype == "success"
    assert result.error is not None and result.error.startswith("API Error: 400 unknown script")
    assert result.usage.input_tokens == 0
    runtime = parser.runtime_result("reviewer")
    assert runtime.status == "failed" and runtime.verdict is None


def test_a_spent_token_budget_is_a_tokens_budget_failure() -> None:
    """The gateway answers 402 once the agent's budget is spent; Claude Code does not retry it."""
    parser, activities = parse("budget_402")
    assert activities and all(a.tool == "run_command" for a in activities)
    result = parser.result
    assert result is not None and result.is_error and result.api_error_status == 402
    assert result.budget == "tokens" and result.error is not None
    assert result.error.startswith("API Error: 402 token budget exhausted for agent")
    assert parser.retries == 0
    runtime = parser.runtime_result("worker")
    assert (runtime.status, runtime.budget) == ("failed", "tokens")


def test_a_rate_limited_request_is_retried_by_the_cli_and_counted() -> None:
    parser, _ = parse("rate_limited")
    assert parser.retries == 1
    result = parser.result
    assert result is not None and not result.is_error and result.api_error_status is None
    assert parser.verdict() is not None and result.budget is None


def test_a_resumed_session_keeps_its_id() -> None:
    worker, _ = parse("worker")
    resumed, activities = parse("resume")
    assert resumed.session_id == worker.session_id and activities == []
    assert resumed.result is not None and resumed.result.turns == 1


def test_a_stream_cut_before_its_result_is_a_failure_with_the_last_text() -> None:
    parser = StreamParser()
    for line in stream("worker")[:3]:  # init, the first text, the Write: then it was killed
        parser.feed(line)
    assert parser.result is None
    runtime = parser.runtime_result("worker")
    assert runtime.status == "failed" and runtime.error == "Claude Code ended without a result"
    assert runtime.summary == "I will add a hello file."


# -- tolerance ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "not json at all",
        "[1, 2, 3]",
        '"a string"',
        "{",
        "[" * 100_000,
        '{"type": "assistant", "message": "oops"}',
        '{"type": "assistant", "message": {"content": "text"}}',
        '{"type": "assistant", "message": {"content": [1, null, {"type": "tool_use"}]}}',
        '{"type": "assistant", "message": {"content": [{"type": "tool_use", "name": 3}]}}',
        '{"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash", '
        '"input": "ls"}]}}',
        '{"type": "system", "subtype": "init", "session_id": 5, "cwd": []}',
        '{"type": "result", "usage": "x", "num_turns": "3", "total_cost_usd": "1", "result": 7}',
        '{"type": "result", "usage": {"input_tokens": -5, "output_tokens": true}, "errors": 3, '
        '"api_error_status": true}',
        "\x00\xff\ud800",
    ],
)
def test_garbage_never_raises(line: str) -> None:
    parser = StreamParser()
    activities = parser.feed(line)
    assert all(isinstance(a, Activity) for a in activities)
    if parser.result is not None:
        assert parser.result.usage.input_tokens >= 0 and parser.result.turns >= 0
        assert parser.result.api_error_status is None


def test_garbage_is_counted_and_a_tool_use_without_input_still_shows() -> None:
    parser = StreamParser()
    assert parser.feed("warning: something") == []
    assert parser.feed("[]") == []
    assert parser.garbage == 2
    line = '{"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash"}]}}'
    assert parser.feed(line) == [Activity("Bash", "")]


@pytest.mark.parametrize("size", [1, 7, 333, 1 << 20])
def test_bytes_in_any_chunks_parse_as_the_lines_do(size: int) -> None:
    data = "\n".join(stream("reviewer")).encode()  # no newline after the result line
    parser = StreamParser()
    activities: list[Activity] = []
    for i in range(0, len(data), size):
        activities += parser.feed_bytes(data[i : i + size])
    assert parser.result is None  # the last line is not complete yet
    activities += parser.flush()
    by_lines, expected = parse("reviewer")
    assert activities == expected and parser.result == by_lines.result
    assert parser.session_id == by_lines.session_id and parser.garbage == 0
    assert parser.flush() == []


def test_an_overlong_line_is_skipped_without_being_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core.agents.claude_stream.MAX_LINE_BYTES", 300)
    ok = json.dumps(
        {"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash"}]}}
    ).encode()
    huge = json.dumps({"type": "user", "message": {"content": "x" * 2000}}).encode()
    parser = StreamParser()
    got: list[Activity] = []
    for chunk in (huge[:100], huge[100:1000], huge[1000:] + b"\n" + ok[:10], ok[10:] + b"\n"):
        got += parser.feed_bytes(chunk)
        assert len(parser._buffer) <= 300
    assert got == [Activity("Bash", "")] and parser.garbage == 1
    assert parser.feed_bytes(huge + b"\n") == [] and parser.garbage == 2  # whole, in one chunk
    parser.feed_bytes(huge)  # cut off at the end of the output
    assert parser.flush() == [] and parser.garbage == 3


def test_a_tool_use_seen_twice_is_reported_once() -> None:
    block = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}
    line = json.dumps({"type": "assistant", "message": {"content": [block]}})
    parser = StreamParser()
    assert parser.feed(line) == [Activity("Bash", "ls")]
    assert parser.feed(line) == []


def test_summaries() -> None:
    parser = StreamParser(cwd="/w/tree")
    assert parser.summarize({"file_path": "/w/tree/src/a.py", "content": "x"}) == "src/a.py"
    assert parser.summarize({"file_path": "/w/other/a.py"}) == "/w/other/a.py"
    assert parser.summarize({"file_path": "/w/tree/../tree2/a"}) == "/w/tree/../tree2/a"
    assert parser.summarize({"notebook_path": "/w/tree/n.ipynb"}) == "n.ipynb"
    assert parser.summarize({"command": "echo a\n  && echo b"}) == "echo a && echo b"
    assert parser.summarize({"pattern": "TODO", "path": "/w/tree/src"}) == "src"
    assert parser.summarize({"url": "https://example.com/x"}) == "https://example.com/x"
    assert parser.summarize({"todos": [1]}) == '{"todos": [1]}'
    assert parser.summarize({}) == ""
    long = parser.summarize({"command": "x" * 1000})
    assert len(long) == SUMMARY_MAX and long.endswith("...")
    # The secret is masked before the summary is cut, so no piece of it survives the cut.
    cut = parser.summarize({"command": "y" * 170 + f" AWS_SECRET_ACCESS_KEY={SECRET}"})
    assert len(cut) <= SUMMARY_MAX and SECRET[4:12] not in cut


# -- argv and env -------------------------------------------------------------------------------


def test_argv_is_headless_stream_json_with_the_prompt_last() -> None:
    argv = claude_argv(
        Path("/opt/claude"),
        "-x do it",
        system_append="You are a reviewer.",
        resume_session="4432ca3e-93ef-43d9-b767-bac1fbf44bc5",
        max_turns=12,
        model="claude-sonnet-5-5",
    )
    assert argv == [
        "/opt/claude",
        "-p",
        "--output-format=stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
        "--append-system-prompt=You are a reviewer.",
        "--resume=4432ca3e-93ef-43d9-b767-bac1fbf44bc5",
        "--max-turns=12",
        "--model=claude-sonnet-5-5",
        "--",
        "-x do it",
    ]
    plain = claude_argv("claude", "go", system_append=None, resume_session=None, max_turns=None)
    assert plain == [
        "claude",
        "-p",
        "--output-format=stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
        "--",
        "go",
    ]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x" * 200_000}, "prompt exceeds"),
        ({"system_append": "y" * 200_000}, "system prompt exceeds"),
        ({"resume_session": "--evil"}, "invalid Claude Code session id"),
        ({"resume_session": "a b"}, "invalid Claude Code session id"),
        ({"max_turns": 0}, "max_turns must be positive"),
    ],
)
def test_argv_refuses_bad_input(kw: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "prompt": "go",
        "system_append": None,
        "resume_session": None,
        "max_turns": None,
    }
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        claude_argv("claude", **args)  # type: ignore[arg-type]


def test_env_is_the_gateway_and_nothing_of_the_host() -> None:
    base = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ANTHROPIC_API_KEY": "sk-real",
        "ANTHROPIC_MODEL": "x",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "AWS_SECRET_ACCESS_KEY": "s",
        "GITHUB_TOKEN": "t",
        "HTTPS_PROXY": "http://proxy",
        "HOME": "/root",
    }
    env = claude_env(base, gateway_port=8081, token="agent-token", home="/home/agent")
    assert env == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8081",
        "ANTHROPIC_API_KEY": "agent-token",
        "HOME": "/home/agent",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "DISABLE_BUG_COMMAND": "1",
        "DISABLE_INSTALLATION_CHECKS": "1",
        "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    }
    capped = claude_env({}, gateway_port=1, token="t", home="/h", max_output_tokens=8192)
    assert capped["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192" and capped["PATH"]
    for port in (0, 65536):
        with pytest.raises(ValueError, match="invalid gateway port"):
            claude_env({}, gateway_port=port, token="t", home="/h")


# -- finding it and what to bind ---------------------------------------------------------------


def _exe(path: Path, data: bytes = b"\x7fELF fake") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755)
    return path


def _package(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(json.dumps({"name": name, "version": "2.1.332"}))
    return root


def test_find_claude(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _exe(tmp_path / "pkg" / "bin" / "claude.exe")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "claude").symlink_to(target)
    monkeypatch.setenv("PATH", str(bindir))
    assert find_claude(None) == target  # ``claude`` on PATH, through its symlink
    assert find_claude("  ") == target
    assert find_claude(str(bindir / "claude")) == target
    assert find_claude("claude-nope") is None
    assert find_claude(str(tmp_path / "missing")) is None
    plain = tmp_path / "not-executable"
    plain.write_text("x")
    assert find_claude(str(plain)) is None
    assert find_claude(str(tmp_path)) is None  # a directory


def test_binds_of_an_npm_install_with_the_native_package_nested(tmp_path: Path) -> None:
    scope = tmp_path / "lib" / "node_modules" / "@anthropic-ai"
    pkg = _package(scope / "claude-code", "@anthropic-ai/claude-code")
    binary = _exe(pkg / "bin" / "claude.exe")
    _exe(_package(pkg / "node_modules/@anthropic-ai/claude-code-linux-x64", "n") / "claude")
    assert claude_binds(binary) == (pkg,)


def test_binds_of_an_npm_install_with_the_native_package_hoisted(tmp_path: Path) -> None:
    scope = tmp_path / "lib" / "node_modules" / "@anthropic-ai"
    pkg = _package(scope / "claude-code", "@anthropic-ai/claude-code")
    binary = _exe(pkg / "bin" / "claude.exe")
    native = _package(scope / "claude-code-linux-x64", "@anthropic-ai/claude-code-linux-x64")
    assert claude_binds(binary) == (pkg, native)
    assert tmp_path / "lib" not in claude_binds(binary)  # never a parent


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_binds_of_the_node_stub_include_node(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "node_modules" / "@anthropic-ai" / "claude-code", "c")
    stub = _exe(pkg / "bin" / "claude.exe", b"#!/usr/bin/env node\nrequire('../cli-wrapper.cjs')\n")
    node = Path(str(shutil.which("node"))).resolve()
    assert claude_binds(stub) == (pkg, node)
    direct = _exe(pkg / "bin" / "direct", f"#!{node}\n".encode())
    assert claude_binds(direct) == (pkg, node)


def test_binds_of_a_standalone_binary_are_the_file_alone(tmp_path: Path) -> None:
    binary = _exe(tmp_path / "home" / ".local" / "share" / "claude" / "versions" / "2.1.332")
    assert claude_binds(binary) == (binary,)


@pytest.mark.skipif(find_claude(None) is None, reason="claude is not installed")
def test_binds_of_the_real_install() -> None:
    binary = find_claude(None)
    assert binary is not None and os.access(binary, os.X_OK)
    binds = claude_binds(binary)
    assert binds and all(p.exists() for p in binds)
    assert any(binary == p or p in binary.parents for p in binds)
    for p in binds:  # the package dir at most, never node_modules or a home above it
        assert p.name != "node_modules" and p.parent.name != "" and str(p) != "/root"
