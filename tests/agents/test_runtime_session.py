"""The agent runtime as a real subprocess, through the real gateway, against the scripted model."""

from __future__ import annotations

import json
from pathlib import Path

from core.agents import EXIT_BUDGET, EXIT_FAILED, EXIT_OK, ModelGateway, PriceTable
from core.agents.scripted import ScriptedModelServer
from tests.agents.conftest import REAL_KEY, UsageLog, add_script, run_agent


async def test_worker_writes_a_file_runs_a_command_and_finishes(
    gateway: ModelGateway,
    scripted: ScriptedModelServer,
    usage_log: UsageLog,
    tmp_path: Path,
    socket_dir: Path,
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="worker-hello")

    assert run.returncode == EXIT_OK, run.stderr
    assert (run.workdir / "hello.txt").read_text() == "Hello from Mosaic\n"
    result = run.result
    assert result.status == "completed"
    assert result.summary == "Added hello.txt with a greeting and checked it."
    assert result.verdict is None
    assert result.usage.turns == 3
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0

    # the transcript has each turn, tool call and result, and usage
    kinds = [r["type"] for r in run.transcript]
    assert kinds == [
        "start",
        "turn",
        "tool_call",
        "tool_result",
        "turn",
        "tool_call",
        "tool_result",
        "turn",
        "end",
    ]
    assert all(r["agent_id"] == "agent-1" for r in run.transcript)
    calls = run.records("tool_call")
    assert [c["name"] for c in calls] == ["write_file", "run_command"]
    command = json.loads(run.records("tool_result")[1]["output"])
    assert command["exit_code"] == 0
    assert "Hello from Mosaic" in command["stdout"]
    assert all("input_tokens" in t["usage"] for t in run.records("turn"))
    assert run.records("end")[0]["usage"] == result.usage.model_dump(exclude={"cost_usd"})

    # the runtime streamed every turn; the gateway added the real key upstream
    model_requests = [r for r in scripted.requests if r.path == "/v1/messages"]
    assert len(model_requests) == 3
    assert all(r.body["stream"] is True for r in model_requests)
    assert all(r.headers["Authorization"] == f"Bearer {REAL_KEY}" for r in model_requests)

    # ... and the key never reached the runtime: not in its env, argv or config
    assert REAL_KEY not in json.dumps(run.env)
    assert REAL_KEY not in " ".join(run.argv)
    assert REAL_KEY not in run.config_path.read_text()
    assert REAL_KEY not in run.stdout + run.stderr
    config = json.loads(run.config_path.read_text())
    assert all(r.headers["Authorization"] != f"Bearer {config['token']}" for r in model_requests)

    # usage was recorded by the gateway, priced from the table
    assert [agent for agent, _ in usage_log.calls] == ["agent-1"] * 3
    prices = PriceTable.load()
    for _, usage in usage_log.calls:
        assert usage.turns == 1
        assert usage.cost_usd == prices.cost("scripted-1", usage.input_tokens, usage.output_tokens)
        assert usage.cost_usd > 0
    assert sum(u.input_tokens for _, u in usage_log.calls) == result.usage.input_tokens
    assert sum(u.output_tokens for _, u in usage_log.calls) == result.usage.output_tokens


async def test_progress_lines_precede_the_result_line(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="tester-hello", role="tester")
    assert run.returncode == EXIT_OK, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0].startswith("[turn 1] write_file")
    assert lines[1].startswith("[turn 2] run_command")
    assert json.loads(lines[-1])["summary"].startswith("Added tests/test_hello.sh")


async def test_reviewer_verdict_approve_is_parsed(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="reviewer-approve", role="reviewer")
    assert run.returncode == EXIT_OK, run.stderr
    verdict = run.result.verdict
    assert verdict is not None
    assert verdict.decision == "approve"
    assert verdict.comments == ["Clear naming", "Nothing to fix"]


async def test_reviewer_verdict_request_changes_is_parsed(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(
        gateway, tmp_path, socket_dir, script="reviewer-request-changes", role="reviewer"
    )
    assert run.returncode == EXIT_OK, run.stderr
    verdict = run.result.verdict
    assert verdict is not None
    assert verdict.decision == "request_changes"
    assert verdict.comments[0] == "Add tests for the new function"


async def test_runaway_agent_ends_at_the_turn_budget(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="runaway", max_turns=3)
    assert run.returncode == EXIT_BUDGET
    assert "budget exceeded: turns" in run.stderr
    assert run.result.status == "failed"
    assert run.result.budget == "turns"
    assert run.result.usage.turns == 3
    assert run.records("budget_exceeded")[0]["budget"] == "turns"
    assert (run.workdir / "progress.log").read_text().count("again") == 3


async def test_runaway_agent_ends_at_the_runtime_token_budget(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="runaway", max_tokens=2000)
    assert run.returncode == EXIT_BUDGET
    assert "budget exceeded: tokens" in run.stderr
    assert run.result.budget == "tokens"
    used = run.result.usage.input_tokens + run.result.usage.output_tokens
    assert used >= 2000
    assert run.records("budget_exceeded")[0]["budget"] == "tokens"


async def test_gateway_token_budget_ends_a_runaway_agent(
    gateway: ModelGateway, usage_log: UsageLog, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="runaway", token_budget=2500)
    assert run.returncode == EXIT_BUDGET
    assert run.result.budget == "tokens"
    assert "token budget exhausted for agent agent-1" in run.stderr
    # each call reserved its input plus its max_tokens before it went: the budget holds
    recorded = sum(u.input_tokens + u.output_tokens for _, u in usage_log.calls)
    assert 0 < recorded <= 2500


async def test_slow_command_ends_at_the_wall_time_budget(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    # the scripted command sleeps 30 s; the test's own timeout (20 s) fails the test if it waits
    run = await run_agent(gateway, tmp_path, socket_dir, script="slow", max_wall_s=2, timeout_s=20)
    assert run.returncode == EXIT_BUDGET
    assert "budget exceeded: wall_time" in run.stderr
    assert run.result.budget == "wall_time"
    output = json.loads(run.records("tool_result")[0]["output"])
    assert output["timed_out"] is True


async def test_unknown_script_fails_the_session_with_the_model_error(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    run = await run_agent(gateway, tmp_path, socket_dir, script="no-such-script")
    assert run.returncode == EXIT_FAILED
    assert "model error 400" in run.stderr
    assert "unknown script 'no-such-script'" in run.result.error  # type: ignore[operator]
    assert "Traceback" not in run.stderr


async def test_tools_succeed_inside_the_worktree(
    gateway: ModelGateway, scripted: ScriptedModelServer, tmp_path: Path, socket_dir: Path
) -> None:
    name = add_script(
        scripted,
        {
            "name": "tools-tour",
            "turns": [
                [
                    {
                        "type": "tool_use",
                        "name": "write_file",
                        "input": {"path": "a/b.txt", "content": "one two\n"},
                    },
                    {"type": "tool_use", "name": "read_file", "input": {"path": "a/b.txt"}},
                    {
                        "type": "tool_use",
                        "name": "edit_file",
                        "input": {"path": "a/b.txt", "old": "one", "new": "three"},
                    },
                    {"type": "tool_use", "name": "list_files", "input": {}},
                    {"type": "tool_use", "name": "list_files", "input": {"path": "a"}},
                    {"type": "tool_use", "name": "search", "input": {"pattern": "thr+ee"}},
                    {
                        "type": "tool_use",
                        "name": "search",
                        "input": {"pattern": "nothing-here", "path": "a"},
                    },
                    {
                        "type": "tool_use",
                        "name": "run_command",
                        "input": {"command": "echo out; echo err >&2; exit 7"},
                    },
                ]
            ],
            "final": "Toured.",
        },
    )
    run = await run_agent(gateway, tmp_path, socket_dir, script=name)
    assert run.returncode == EXIT_OK, run.stderr
    results = run.records("tool_result")
    assert [r["is_error"] for r in results] == [False] * 8
    outputs = [r["output"] for r in results]
    assert outputs[0] == "wrote 8 bytes to a/b.txt"
    assert outputs[1] == "one two\n"
    assert outputs[2] == "edited a/b.txt"
    assert (run.workdir / "a" / "b.txt").read_text() == "three two\n"
    assert outputs[3] == "a/b.txt"
    assert outputs[4] == "a/b.txt"
    assert outputs[5] == "a/b.txt:1: three two"
    assert outputs[6] == "(no matches)"
    assert json.loads(outputs[7]) == {
        "exit_code": 7,
        "timed_out": False,
        "stdout": "out\n",
        "stderr": "err\n",
    }


async def test_tools_refuse_paths_outside_the_worktree(
    gateway: ModelGateway, scripted: ScriptedModelServer, tmp_path: Path, socket_dir: Path
) -> None:
    workdir = tmp_path / "worktree"
    workdir.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("outside\n")
    (workdir / "link").symlink_to(tmp_path)
    (workdir / "link-file").symlink_to(secret)
    refusals = [
        ("read_file", {"path": "../secret.txt"}),
        ("read_file", {"path": str(secret)}),
        ("read_file", {"path": "link/secret.txt"}),
        ("write_file", {"path": "link-file", "content": "overwritten"}),
        ("write_file", {"path": "../new.txt", "content": "x"}),
        ("write_file", {"path": str(tmp_path / "abs-new.txt"), "content": "x"}),
        ("edit_file", {"path": "../secret.txt", "old": "outside", "new": "x"}),
        ("list_files", {"path": ".."}),
        ("search", {"pattern": "outside", "path": "link"}),
        ("run_command", {"command": "true", "timeout_s": -1}),
    ]
    name = add_script(
        scripted,
        {
            "name": "escaper",
            "turns": [[{"type": "tool_use", "name": t, "input": i} for t, i in refusals]],
            "final": "Tried.",
        },
    )
    run = await run_agent(gateway, tmp_path, socket_dir, script=name, workdir=workdir)
    assert run.returncode == EXIT_OK, run.stderr
    results = run.records("tool_result")
    assert [r["is_error"] for r in results] == [True] * len(refusals)
    for result in results[:9]:
        assert "outside the worktree" in result["output"], result
    assert "timeout_s" in results[9]["output"]
    assert secret.read_text() == "outside\n"
    assert not (tmp_path / "new.txt").exists()
    assert not (tmp_path / "abs-new.txt").exists()
    # the model saw the refusals as error tool_results
    last_request = [r for r in scripted.requests if r.path == "/v1/messages"][-1]
    tool_results = last_request.body["messages"][-1]["content"]
    assert all(block["is_error"] is True for block in tool_results)
