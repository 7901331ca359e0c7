"""The built-in Claude agent runtime: a standalone script run inside the agent's sandbox.

    <python> -I runtime.py --config <file.json>

It imports only the standard library, ``anthropic`` and ``httpx2`` (never ``core.*``: inside the
sandbox only this file and site-packages are visible). It reaches the model only through the
orchestrator's model gateway on a Unix socket, authenticating with a per-agent token; the real
API key never enters the sandbox.

Config JSON fields:
  agent_id, role ("worker" | "reviewer" | "tester"), system, prompt, model,
  socket (gateway socket path), token (per-agent gateway token),
  workdir (the worktree; every tool path must resolve inside it),
  transcript (JSONL file the session is appended to),
  max_turns, max_tokens (input+output over the session), max_wall_s,
  command_timeout_s (default and maximum for run_command), max_output_tokens_per_turn.

Output (see ``core/agents/results.py``): progress lines, then a last stdout line of JSON
``{"status", "summary", "verdict", "usage", "error", "budget"}``. Exit codes: 0 completed,
1 failed, 2 bad config or command line, 3 a budget was exceeded (named on stderr, in the
transcript and in the result line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import anthropic
import httpx2

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3
MAX_READ_BYTES = 256 * 1024
TAIL_BYTES = 8 * 1024
MAX_LIST_ENTRIES = 2000
MAX_SEARCH_HITS = 200
MAX_SEARCH_FILE_BYTES = 2 * 1024 * 1024
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", ".mypy_cache", ".pytest_cache"}

TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a UTF-8 text file of the worktree.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Path relative to the worktree"}
            },
            "required": ["path"],
        },
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a file of the worktree (and its parent directories).",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "edit_file",
        "description": "Replace the one occurrence of `old` by `new` in a file of the worktree.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old": {"type": "string"},
                "new": {"type": "string"},
            },
            "required": ["path", "old", "new"],
        },
    },
    {
        "name": "list_files",
        "description": "List the files under a directory of the worktree (default: all of it).",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {
        "name": "search",
        "description": "Search files of the worktree for a regular expression; path:line: text.",
        "input_schema": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
    {
        "name": "run_command",
        "description": "Run `sh -c COMMAND` in the worktree; returns exit code and output tails.",
        "input_schema": {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout_s": {"type": "number"}},
            "required": ["command"],
        },
    },
]


class ConfigInvalid(Exception):
    pass


class BudgetExceeded(BaseException):
    """A BaseException, so that no ``except Exception`` in the SDK swallows it."""

    def __init__(self, budget: str, detail: str) -> None:
        super().__init__(f"budget exceeded: {budget} ({detail})")
        self.budget = budget


class ToolError(Exception):
    pass


class Terminated(BaseException):
    pass


_CONFIG_FIELDS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "agent_id": (str, None),
    "role": (str, None),
    "system": (str, ""),
    "prompt": (str, None),
    "model": (str, None),
    "socket": (str, None),
    "token": (str, None),
    "workdir": (str, None),
    "transcript": (str, None),
    "max_turns": (int, 50),
    "max_tokens": (int, 2_000_000),
    "max_wall_s": ((int, float), 3600),
    "command_timeout_s": ((int, float), 600),
    "max_output_tokens_per_turn": (int, 8192),
}


def load_config(path: str) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigInvalid(f"cannot read config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigInvalid(f"config {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigInvalid("config must be a JSON object")
    config: dict[str, Any] = {}
    for name, (kind, default) in _CONFIG_FIELDS.items():
        value = raw.get(name, default)
        if value is None:
            raise ConfigInvalid(f"config field {name!r} is required")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigInvalid(f"config field {name!r} has the wrong type")
        if isinstance(value, int | float) and value <= 0:
            raise ConfigInvalid(f"config field {name!r} must be positive")
        config[name] = value
    if config["role"] not in ("worker", "reviewer", "tester"):
        raise ConfigInvalid("config field 'role' must be worker, reviewer or tester")
    if not Path(config["workdir"]).is_dir():
        raise ConfigInvalid(f"workdir {config['workdir']} is not a directory")
    return config


class Transcript:
    def __init__(self, path: str, agent_id: str) -> None:
        self.path = path
        self.agent_id = agent_id

    def write(self, kind: str, **fields: Any) -> None:
        record = {"ts": round(time.time(), 3), "agent_id": self.agent_id, "type": kind, **fields}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


class Tools:
    """The six tools of SPEC §8; every path must resolve inside the worktree."""

    def __init__(self, workdir: str, command_timeout_s: float, remaining_s: Callable[[], float]):
        self.root = Path(workdir).resolve()
        self.command_timeout_s = float(command_timeout_s)
        self.remaining_s = remaining_s

    def dispatch(self, name: str, args: Any) -> str:
        if not isinstance(args, dict):
            raise ToolError(f"{name}: input must be an object")
        handler = getattr(self, f"tool_{name}", None)
        if handler is None or name not in {t["name"] for t in TOOLS}:
            raise ToolError(f"unknown tool {name!r}")
        result: str = handler(args)
        return result

    def _path(self, args: dict[str, Any], key: str = "path", default: str | None = None) -> Path:
        raw = args.get(key, default)
        if not isinstance(raw, str) or not raw:
            raise ToolError(f"'{key}' must be a non-empty string")
        if "\0" in raw:
            raise ToolError(f"'{key}' contains a NUL byte")
        candidate = Path(raw) if os.path.isabs(raw) else self.root / raw
        resolved = candidate.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise ToolError(f"path {raw!r} is outside the worktree")
        return resolved

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path != self.root else "."

    @staticmethod
    def _str(args: dict[str, Any], key: str) -> str:
        value = args.get(key)
        if not isinstance(value, str):
            raise ToolError(f"'{key}' must be a string")
        return value

    def tool_read_file(self, args: dict[str, Any]) -> str:
        path = self._path(args)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_READ_BYTES + 1)
        except FileNotFoundError:
            raise ToolError(f"{self._rel(path)}: no such file") from None
        except IsADirectoryError:
            raise ToolError(f"{self._rel(path)}: is a directory") from None
        text = data[:MAX_READ_BYTES].decode("utf-8", errors="replace")
        if len(data) > MAX_READ_BYTES:
            text += f"\n[truncated at {MAX_READ_BYTES} bytes]"
        return text

    def tool_write_file(self, args: dict[str, Any]) -> str:
        path = self._path(args)
        content = self._str(args, "content")
        if path.is_dir():
            raise ToolError(f"{self._rel(path)}: is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        return f"wrote {len(content.encode('utf-8'))} bytes to {self._rel(path)}"

    def tool_edit_file(self, args: dict[str, Any]) -> str:
        path = self._path(args)
        old, new = self._str(args, "old"), self._str(args, "new")
        if not old:
            raise ToolError("'old' must not be empty")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ToolError(f"{self._rel(path)}: no such file") from None
        except (IsADirectoryError, UnicodeDecodeError) as exc:
            raise ToolError(f"{self._rel(path)}: cannot edit ({type(exc).__name__})") from None
        count = text.count(old)
        if count != 1:
            raise ToolError(f"{self._rel(path)}: 'old' occurs {count} times; it must occur once")
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return f"edited {self._rel(path)}"

    def _walk(self, base: Path) -> list[Path]:
        if base.is_file():
            return [base]
        if not base.is_dir():
            raise ToolError(f"{self._rel(base)}: no such directory")
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            found.extend(Path(dirpath) / f for f in sorted(filenames))
        return found

    def tool_list_files(self, args: dict[str, Any]) -> str:
        base = self._path(args, default=".")
        files = self._walk(base)
        lines = [self._rel(f) for f in files[:MAX_LIST_ENTRIES]]
        if len(files) > MAX_LIST_ENTRIES:
            lines.append(f"[{len(files) - MAX_LIST_ENTRIES} more not shown]")
        return "\n".join(lines) if lines else "(no files)"

    def tool_search(self, args: dict[str, Any]) -> str:
        try:
            regex = re.compile(self._str(args, "pattern"))
        except re.error as exc:
            raise ToolError(f"invalid pattern: {exc}") from None
        base = self._path(args, default=".")
        hits: list[str] = []
        for file in self._walk(base):
            try:
                if file.stat().st_size > MAX_SEARCH_FILE_BYTES:
                    continue
                data = file.read_bytes()
            except OSError:
                continue
            if b"\0" in data[:1024]:
                continue
            for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                if regex.search(line):
                    hits.append(f"{self._rel(file)}:{number}: {line[:300]}")
                    if len(hits) >= MAX_SEARCH_HITS:
                        return "\n".join([*hits, f"[stopped at {MAX_SEARCH_HITS} matches]"])
        return "\n".join(hits) if hits else "(no matches)"

    def tool_run_command(self, args: dict[str, Any]) -> str:
        command = self._str(args, "command")
        timeout = args.get("timeout_s", self.command_timeout_s)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ToolError("'timeout_s' must be a positive number")
        timeout = min(float(timeout), self.command_timeout_s, max(self.remaining_s(), 0.1))
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                ["sh", "-c", command],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
            return json.dumps(
                {
                    "exit_code": proc.returncode,
                    "timed_out": timed_out,
                    "stdout": _tail(out),
                    "stderr": _tail(err),
                }
            )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command's whole process group (it leads it: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(fh: Any) -> str:
    size = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, size - TAIL_BYTES))
    data: bytes = fh.read()
    text = data.decode("utf-8", errors="replace")
    return f"[{size - TAIL_BYTES} bytes cut]\n{text}" if size > TAIL_BYTES else text


VERDICT_LINE = re.compile(
    r"^\s*\**VERDICT\**\s*:\s*\**\s*(approve|request[_ -]changes)\b", re.I | re.M
)


def parse_verdict(text: str) -> dict[str, Any] | None:
    """``VERDICT: approve`` / ``VERDICT: request_changes``; comments are the ``- `` lines."""
    matches = list(VERDICT_LINE.finditer(text))
    if not matches:
        return None
    decision = matches[-1].group(1).lower().replace(" ", "_").replace("-", "_")
    comments = [
        line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")
    ]
    return {"decision": decision, "comments": [c for c in comments if c]}


class Session:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.started = time.monotonic()
        self.transcript = Transcript(config["transcript"], config["agent_id"])
        self.tools = Tools(config["workdir"], config["command_timeout_s"], self.remaining_s)
        self.usage = {"input_tokens": 0, "output_tokens": 0, "turns": 0}
        http = httpx2.Client(transport=httpx2.HTTPTransport(uds=config["socket"]))
        self.client = anthropic.Anthropic(
            api_key=config["token"], base_url="http://gateway", http_client=http, max_retries=2
        )

    def remaining_s(self) -> float:
        return float(self.config["max_wall_s"]) - (time.monotonic() - self.started)

    def check_wall(self) -> None:
        if self.remaining_s() <= 0:
            raise BudgetExceeded("wall_time", f"limit {self.config['max_wall_s']}s")

    def run(self) -> str:
        cfg = self.config
        messages: list[dict[str, Any]] = [{"role": "user", "content": cfg["prompt"]}]
        last_text = ""
        while True:
            self.check_wall()
            if self.usage["turns"] >= cfg["max_turns"]:
                raise BudgetExceeded("turns", f"limit {cfg['max_turns']} turns")
            with self.client.messages.stream(
                model=cfg["model"],
                max_tokens=cfg["max_output_tokens_per_turn"],
                system=cfg["system"],
                messages=messages,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
                timeout=max(self.remaining_s(), 1.0),
            ) as stream:
                message = stream.get_final_message()
            self.usage["turns"] += 1
            self.usage["input_tokens"] += message.usage.input_tokens
            self.usage["output_tokens"] += message.usage.output_tokens
            content = [block.to_dict() for block in message.content]
            texts = [b.text for b in message.content if b.type == "text"]
            if texts:
                last_text = "\n".join(texts)
            self.transcript.write(
                "turn",
                turn=self.usage["turns"],
                stop_reason=message.stop_reason,
                content=content,
                usage={
                    "input_tokens": message.usage.input_tokens,
                    "output_tokens": message.usage.output_tokens,
                },
                total_usage=dict(self.usage),
            )
            messages.append({"role": "assistant", "content": content})
            calls = [b for b in message.content if b.type == "tool_use"]
            if not calls:
                return last_text
            used = self.usage["input_tokens"] + self.usage["output_tokens"]
            if used >= cfg["max_tokens"]:
                raise BudgetExceeded("tokens", f"used {used} of {cfg['max_tokens']} tokens")
            results = [self.call_tool(call.id, call.name, call.input) for call in calls]
            messages.append({"role": "user", "content": results})

    def call_tool(self, call_id: str, name: str, args: Any) -> dict[str, Any]:
        self.check_wall()
        shown = json.dumps(args, ensure_ascii=False)
        _progress(f"[turn {self.usage['turns']}] {name} {shown[:160]}")
        self.transcript.write(
            "tool_call", turn=self.usage["turns"], id=call_id, name=name, input=args
        )
        try:
            output, is_error = self.tools.dispatch(name, args), False
        except ToolError as exc:
            output, is_error = f"error: {exc}", True
        except OSError as exc:
            output, is_error = f"error: {name}: {exc.strerror or exc}", True
        self.transcript.write(
            "tool_result",
            turn=self.usage["turns"],
            id=call_id,
            name=name,
            is_error=is_error,
            output=output,
        )
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id, "content": output}
        if is_error:
            result["is_error"] = True
        return result


def _progress(line: str) -> None:
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()


def _finish(
    session: Session | None,
    status: str,
    summary: str,
    error: str | None,
    budget: str | None,
    role: str | None,
) -> None:
    verdict = parse_verdict(summary) if role == "reviewer" and status == "completed" else None
    usage = session.usage if session else {"input_tokens": 0, "output_tokens": 0, "turns": 0}
    if session is not None:
        session.transcript.write(
            "end",
            status=status,
            summary=summary,
            verdict=verdict,
            usage=usage,
            error=error,
            budget=budget,
        )
    line = {
        "status": status,
        "summary": summary,
        "verdict": verdict,
        "usage": usage,
        "error": error,
        "budget": budget,
    }
    sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise BudgetExceeded("wall_time", "wall-clock limit reached")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mosaic Claude agent runtime")
    parser.add_argument("--config", required=True, help="path of the JSON config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigInvalid as exc:
        sys.stderr.write(f"runtime: {exc}\n")
        _finish(None, "failed", "", str(exc), None, None)
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_alarm)
    session = Session(config)
    session.transcript.write(
        "start", role=config["role"], model=config["model"], prompt=config["prompt"]
    )
    signal.setitimer(signal.ITIMER_REAL, float(config["max_wall_s"]) + 1.0)
    try:
        summary = session.run()
    except BudgetExceeded as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stderr.write(f"runtime: {exc}\n")
        session.transcript.write("budget_exceeded", budget=exc.budget, message=str(exc))
        _finish(session, "failed", "", str(exc), exc.budget, config["role"])
        return EXIT_BUDGET
    except Terminated as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stderr.write(f"runtime: terminated by {exc}\n")
        _finish(session, "failed", "", f"terminated by {exc}", None, config["role"])
        return 128 + signal.SIGTERM
    except anthropic.APIStatusError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        message = _api_error_message(exc)
        if exc.status_code == 402 and "budget" in message:
            sys.stderr.write(f"runtime: budget exceeded: tokens ({message})\n")
            session.transcript.write("budget_exceeded", budget="tokens", message=message)
            _finish(
                session,
                "failed",
                "",
                f"budget exceeded: tokens ({message})",
                "tokens",
                config["role"],
            )
            return EXIT_BUDGET
        sys.stderr.write(f"runtime: model error {exc.status_code}: {message}\n")
        _finish(
            session, "failed", "", f"model error {exc.status_code}: {message}", None, config["role"]
        )
        return EXIT_FAILED
    except anthropic.APIError as exc:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stderr.write(f"runtime: model unreachable: {exc}\n")
        _finish(session, "failed", "", f"model unreachable: {exc}", None, config["role"])
        return EXIT_FAILED
    signal.setitimer(signal.ITIMER_REAL, 0)
    _finish(session, "completed", summary, None, None, config["role"])
    return EXIT_OK


def _api_error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(exc.message)


if __name__ == "__main__":
    sys.exit(main())
