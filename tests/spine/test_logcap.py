"""Agent logs are capped in place at ``AGENT_LOG_MB``, keeping their tail, even while the
sandboxed process keeps appending to them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from core.logcap import cap_log, cap_logs
from core.run import SandboxExecutor
from core.safeio import MiB
from sandbox import SandboxSpec
from sandbox.none import NoneSandbox


def numbered(lines: range) -> bytes:
    return b"".join(b"line %08d\n" % i for i in lines)


def test_oversized_log_keeps_its_last_half_behind_a_marker(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(numbered(range(300_000)))  # 4.3 MiB
    dropped = cap_log(log, MiB)
    data = log.read_bytes()
    assert dropped > 3 * MiB and len(data) <= MiB // 2 + 100
    first, second, *rest = data.splitlines()
    assert first == f"[mosaic: {dropped} bytes of earlier output dropped (log cap)]".encode()
    assert second.startswith(b"line ") and len(second) == 13  # starts with a whole line
    assert rest[-1] == b"line 00299999"
    assert cap_log(log, MiB) == 0  # under the cap: untouched
    assert log.read_bytes() == data


def test_capping_while_the_agent_appends_keeps_its_latest_output(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)\n"
            "for i in range(600_000):\n"
            "    os.write(fd, b'line %08d\\n' % i)\n",
            str(log),
        ]
    )
    caps = 0
    while writer.poll() is None:
        caps += cap_log(log, MiB) > 0
        time.sleep(0.01)
    caps += cap_log(log, MiB) > 0
    assert writer.returncode == 0
    assert caps >= 2
    assert log.stat().st_size <= MiB
    lines = log.read_bytes().splitlines()
    numbers = [int(line[5:]) for line in lines if line.startswith(b"line ")]
    assert all(line.startswith((b"line ", b"[mosaic: ")) for line in lines)  # nothing torn
    assert numbers[-1] == 599_999 and numbers == sorted(set(numbers))


def test_a_log_that_is_a_link_or_a_fifo_is_left_alone(tmp_path: Path) -> None:
    host = tmp_path / "host.txt"
    host.write_bytes(b"h" * (3 * MiB))
    (tmp_path / "stdout.log").symlink_to(host)
    os.mkfifo(tmp_path / "stderr.log")
    assert cap_logs(tmp_path, 1) == 0
    assert host.stat().st_size == 3 * MiB


async def test_gate_command_logs_are_capped_too(tmp_path: Path) -> None:
    """Gate commands run in sandboxes of their own, writing their own logs: same cap."""
    template = SandboxSpec(
        agent_id="agent-1", argv=["true"], workdir=tmp_path, env={}, log_dir=tmp_path
    )
    executor = SandboxExecutor(NoneSandbox(), template, tmp_path / "logs", log_cap_mb=1)
    result = await executor("seq 1 500000; echo gate-done", cwd=tmp_path, timeout_s=30)
    log = tmp_path / "logs" / "gate-1" / "stdout.log"
    assert result.exit_code == 0 and result.output.splitlines()[-1] == "gate-done"
    assert log.stat().st_size <= MiB
    assert log.read_text().startswith("[mosaic: ")
