"""SubprocessExecutor: output, exit codes, and no process left behind on timeout or cancel."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil
import pytest

from core.gates import SubprocessExecutor
from core.gates.executor import descendants_of


def _marked(marker: str) -> list[psutil.Process]:
    """Live processes whose command line carries ``marker`` (zombies do not count)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


async def _wait_gone(marker: str, within_s: float = 5.0) -> list[psutil.Process]:
    for _ in range(int(within_s / 0.05)):
        left = _marked(marker)
        if not left:
            return []
        await asyncio.sleep(0.05)
    return _marked(marker)


async def test_runs_in_cwd_and_captures_stdout_and_stderr(tmp_path: Path) -> None:
    run = SubprocessExecutor()
    res = await run("pwd; echo out; echo err >&2; exit 3", cwd=tmp_path, timeout_s=10)
    assert res.exit_code == 3
    assert not res.timed_out
    assert str(tmp_path) in res.output
    assert "out" in res.output and "err" in res.output
    assert res.duration_s >= 0


async def test_env_is_the_commands_environment(tmp_path: Path) -> None:
    run = SubprocessExecutor(env={"PATH": os.environ["PATH"], "GATE_MARK": "hello"})
    res = await run('echo "$GATE_MARK"', cwd=tmp_path, timeout_s=10)
    assert res.output.strip() == "hello"


async def test_keeps_only_the_tail_of_long_output(tmp_path: Path) -> None:
    run = SubprocessExecutor(max_output_bytes=1000)
    res = await run("seq 1 100000", cwd=tmp_path, timeout_s=30)
    assert res.exit_code == 0
    assert len(res.output) <= 1000
    assert res.output.rstrip().endswith("100000")


async def test_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    marker = f"{os.getpid()}1001"
    run = SubprocessExecutor()
    res = await run(f"sleep {marker} & sleep {marker}", cwd=tmp_path, timeout_s=0.5)
    assert res.timed_out
    assert res.exit_code != 0
    assert await _wait_gone(marker) == []


async def test_timeout_kills_children_that_left_the_process_group(tmp_path: Path) -> None:
    marker = f"{os.getpid()}1002"
    run = SubprocessExecutor()
    res = await run(f"setsid sleep {marker} & sleep {marker}", cwd=tmp_path, timeout_s=0.5)
    assert res.timed_out
    assert await _wait_gone(marker) == []


async def test_background_leftovers_are_killed_when_the_command_exits(tmp_path: Path) -> None:
    marker = f"{os.getpid()}1003"
    run = SubprocessExecutor()
    res = await run(f"sleep {marker} & echo started", cwd=tmp_path, timeout_s=10)
    assert res.exit_code == 0
    assert not res.timed_out
    assert "started" in res.output
    assert await _wait_gone(marker) == []


async def test_cancellation_kills_the_tree(tmp_path: Path) -> None:
    marker = f"{os.getpid()}1004"
    run = SubprocessExecutor()
    task = asyncio.create_task(run(f"sleep {marker} & sleep {marker}", cwd=tmp_path, timeout_s=60))
    for _ in range(100):
        if len(_marked(marker)) >= 2:
            break
        await asyncio.sleep(0.02)
    assert len(_marked(marker)) >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_gone(marker) == []


async def test_descendants_of_walks_the_tree(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", "sleep 30 & sleep 30 & wait", start_new_session=True
    )
    try:
        names: list[str] = []
        for _ in range(200):  # a forked child is named "sh" until it has exec'd sleep
            kids = descendants_of(proc.pid)
            names = [psutil.Process(k).name() for k in kids]
            if names == ["sleep", "sleep"]:
                break
            await asyncio.sleep(0.02)
        assert len(kids) == 2
        assert names == ["sleep", "sleep"]
        assert descendants_of(2**22 + 12345) == []
    finally:
        os.killpg(proc.pid, 9)
        await proc.wait()
