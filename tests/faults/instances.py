"""Real orchestrator processes (``mosaic-orchestrator --headless``) for the fault suite."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = re.compile(r"API on (\S+?):(\d+)")


@dataclass
class Instance:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def instance_env(name: str, state: Path, valkey_url: str, **settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "ANTHROPIC_"))}
    env.update(
        {
            "INSTANCE_NAME": name,
            "MOSAIC_STATE_DIR": str(state),
            "VALKEY_URL": valkey_url,
            "ORCHESTRATOR_PORT": "0",
            "ORCHESTRATOR_API_KEY": "",
            "COORDINATOR_URL": "",
        }
    )
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


def start_instance(name: str, state: Path, env: dict[str, str], timeout: float = 60) -> Instance:
    state.mkdir(parents=True, exist_ok=True)
    log = state.parent / f"{name}.log"
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mosaic_tui", "--headless"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        found = ADDRESS.search(text)
        if found:
            return Instance(name, proc, f"http://{found.group(1)}:{found.group(2)}", log)
        if proc.poll() is not None:
            raise AssertionError(f"instance {name} exited: {text[-2000:]}")
        time.sleep(0.1)
    stop_instance(proc)
    raise AssertionError(f"instance {name} did not start: {log.read_text()[-2000:]}")


def stop_instance(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGCONT (it may be paused), SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def paused(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)
