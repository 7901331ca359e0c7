"""The runtime's tools, config loading and verdict parsing, plus process-level behaviour
(run_command's group kill, SIGTERM, bad configs) of the real script."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from core.agents import ModelGateway, build_prompts, build_runtime_config
from core.agents.runtime import (
    ConfigInvalid,
    ToolError,
    Tools,
    load_config,
    main,
    parse_verdict,
)
from tests.agents.conftest import clean_env, runtime_command


@pytest.fixture
def tools(tmp_path: Path) -> Tools:
    root = tmp_path / "wt"
    root.mkdir()
    return Tools(str(root), command_timeout_s=10, remaining_s=lambda: 100.0)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_run_command_timeout_kills_the_whole_process_group(tools: Tools) -> None:
    out = json.loads(
        tools.dispatch(
            "run_command",
            {"command": "sleep 30 & echo $! > bg.pid; echo started; sleep 30", "timeout_s": 1},
        )
    )
    assert out["timed_out"] is True
    assert out["exit_code"] == -signal.SIGKILL
    assert out["stdout"] == "started\n"
    background = int((tools.root / "bg.pid").read_text())
    for _ in range(50):  # the kill is sent already; give the kernel a moment to reap
        if not _alive(background):
            break
        time.sleep(0.05)
    assert not _alive(background)


def test_run_command_timeout_is_capped_by_the_remaining_wall_time(tmp_path: Path) -> None:
    tools = Tools(str(tmp_path), command_timeout_s=60, remaining_s=lambda: 0.5)
    out = json.loads(tools.dispatch("run_command", {"command": "sleep 20", "timeout_s": 50}))
    assert out["timed_out"] is True


def test_run_command_output_tails(tools: Tools) -> None:
    out = json.loads(
        tools.dispatch("run_command", {"command": "head -c 20000 /dev/zero | tr '\\0' a"})
    )
    assert out["exit_code"] == 0
    assert out["stdout"].startswith("[11808 bytes cut]\n")
    assert out["stdout"].endswith("a" * 100)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("read_file", {"path": "missing.txt"}, "no such file"),
        ("read_file", {"path": "."}, "is a directory"),
        ("read_file", {"path": 3}, "non-empty string"),
        ("read_file", {"path": "a\0b"}, "NUL"),
        ("write_file", {"path": "d", "content": "x"}, "is a directory"),
        ("write_file", {"path": "f.txt"}, "'content' must be a string"),
        ("edit_file", {"path": "missing.txt", "old": "a", "new": "b"}, "no such file"),
        ("edit_file", {"path": "f.txt", "old": "", "new": "b"}, "must not be empty"),
        ("edit_file", {"path": "f.txt", "old": "zzz", "new": "b"}, "occurs 0 times"),
        ("edit_file", {"path": "f.txt", "old": "o", "new": "b"}, "occurs 2 times"),
        ("edit_file", {"path": "d", "old": "o", "new": "b"}, "cannot edit"),
        ("list_files", {"path": "nowhere"}, "no such directory"),
        ("search", {"pattern": "("}, "invalid pattern"),
        ("run_command", {}, "'command' must be a string"),
        ("run_command", {"command": "true", "timeout_s": True}, "positive number"),
        ("delete_everything", {}, "unknown tool"),
        ("read_file", ["not", "an", "object"], "input must be an object"),
    ],
)
def test_tool_errors_are_clear(tools: Tools, name: str, args: Any, message: str) -> None:
    (tools.root / "d").mkdir()
    (tools.root / "f.txt").write_text("foo\n")
    with pytest.raises(ToolError, match=message):
        tools.dispatch(name, args)


def test_read_list_and_search_limits(tools: Tools) -> None:
    (tools.root / "big.txt").write_bytes(b"x" * (300 * 1024))
    assert tools.dispatch("read_file", {"path": "big.txt"}).endswith("[truncated at 262144 bytes]")
    (tools.root / ".git").mkdir()
    (tools.root / ".git" / "HEAD").write_text("ref")
    (tools.root / "bin.dat").write_bytes(b"\0match")
    (tools.root / "many.txt").write_text("match\n" * 250)
    listing = tools.dispatch("list_files", {})
    assert ".git" not in listing and "many.txt" in listing
    hits = tools.dispatch("search", {"pattern": "match"}).splitlines()
    assert hits[-1] == "[stopped at 200 matches]"
    assert not any(h.startswith("bin.dat") for h in hits)
    assert tools.dispatch("list_files", {"path": "many.txt"}) == "many.txt"
    empty = tools.root / "empty"
    empty.mkdir()
    assert tools.dispatch("list_files", {"path": "empty"}) == "(no files)"


def test_verdict_parsing() -> None:
    assert parse_verdict("All good.\nVERDICT: approve\n- nice") == {
        "decision": "approve",
        "comments": ["nice"],
    }
    assert (
        parse_verdict("**VERDICT:** Request changes\n- a\n-\n- b")["decision"] == "request_changes"
    )  # type: ignore[index]
    assert parse_verdict("verdict: request-changes")["comments"] == []  # type: ignore[index]
    assert parse_verdict("I approve of this") is None


def _config(tmp_path: Path, **overrides: Any) -> Path:
    raw: dict[str, Any] = {
        "agent_id": "a",
        "role": "worker",
        "prompt": "p",
        "model": "m",
        "socket": str(tmp_path / "none.sock"),
        "token": "t",
        "workdir": str(tmp_path),
        "transcript": str(tmp_path / "t.jsonl"),
    }
    raw.update(overrides)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({k: v for k, v in raw.items() if v is not None}))
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": None}, "'prompt' is required"),
        ({"max_turns": "5"}, "'max_turns' has the wrong type"),
        ({"max_turns": True}, "wrong type"),
        ({"max_wall_s": 0}, "must be positive"),
        ({"role": "boss"}, "worker, reviewer or tester"),
        ({"workdir": "/nonexistent/dir"}, "is not a directory"),
    ],
)
def test_bad_configs_are_refused(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigInvalid, match=message):
        load_config(str(_config(tmp_path, **overrides)))


def test_unreadable_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigInvalid, match="cannot read config"):
        load_config(str(tmp_path / "missing.json"))
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ConfigInvalid, match="not JSON"):
        load_config(str(tmp_path / "x.json"))
    (tmp_path / "y.json").write_text("[]")
    with pytest.raises(ConfigInvalid, match="JSON object"):
        load_config(str(tmp_path / "y.json"))
    assert main(["--config", str(tmp_path / "y.json")]) == 2
    out, err = capsys.readouterr()
    assert "runtime: config must be a JSON object" in err
    assert json.loads(out.splitlines()[-1])["status"] == "failed"


async def test_unreachable_gateway_fails_cleanly(tmp_path: Path) -> None:
    config = _config(tmp_path, max_wall_s=30)
    proc = await asyncio.create_subprocess_exec(
        *runtime_command(config), env=clean_env(tmp_path), stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "model unreachable" in err.decode()
    assert "Traceback" not in err.decode()
    assert json.loads(out.decode().splitlines()[-1])["status"] == "failed"


async def test_bad_config_file_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *runtime_command(tmp_path / "missing.json"), env=clean_env(tmp_path), stdout=-1, stderr=-1
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "cannot read config" in err.decode()
    assert "Traceback" not in err.decode()


async def test_sigterm_ends_the_session_and_its_command(
    gateway: ModelGateway, tmp_path: Path, socket_dir: Path
) -> None:
    workdir = tmp_path / "wt"
    workdir.mkdir()
    transcript = tmp_path / "t.jsonl"
    system, prompt = build_prompts("worker", "T", [], [], "[script:slow]")
    async with gateway.serve_agent("a", socket_dir, None) as endpoint:
        config_path = tmp_path / "c.json"
        config_path.write_text(
            json.dumps(
                build_runtime_config(
                    agent_id="a",
                    role="worker",
                    system=system,
                    prompt=prompt,
                    model="m",
                    socket=endpoint.socket_path,
                    token=endpoint.token,
                    workdir=workdir,
                    transcript=transcript,
                )
            )
        )
        proc = await asyncio.create_subprocess_exec(
            *runtime_command(config_path),
            cwd=workdir,
            env=clean_env(tmp_path),
            stdout=-1,
            stderr=-1,
        )
        try:
            for _ in range(600):  # until the runtime has started `sleep 30`
                if transcript.exists() and '"tool_call"' in transcript.read_text():
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            proc.terminate()
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "terminated by SIGTERM" in err.decode()
    assert json.loads(out.decode().splitlines()[-1])["error"] == "terminated by SIGTERM"
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    assert records[-1]["type"] == "end" and records[-1]["status"] == "failed"
    assert _processes_in(workdir) == []  # the command's group died with the session


def _processes_in(directory: Path) -> list[int]:
    """Live processes whose current directory is ``directory``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(os.readlink(f"/proc/{entry}/cwd")) == directory and _alive(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found
