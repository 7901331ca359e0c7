"""Claude Code, the CLI: where it is, what its sandbox binds, how it starts, what it prints.

The claude-code runtime (SPEC §15) runs ``claude -p`` in the agent's sandbox; this module holds
the pure parts: :func:`find_claude`, :func:`claude_binds`, :func:`claude_argv`,
:func:`claude_env` and :class:`StreamParser` (its ``--output-format stream-json`` lines ->
activities, session id, result, verdict).

What the pinned 2.1.332 does (recorded against the scripted model as uid 64000; trimmed copies in
``tests/agents/fixtures/claude_code/``):

- **Install.** ``claude`` on PATH links to ``<npm root>/@anthropic-ai/claude-code/bin/claude.exe``,
  which the package's postinstall replaced by (a hard link to) the ~400 MB native ELF of the
  optional package ``@anthropic-ai/claude-code-linux-x64`` (in the package's ``node_modules``):
  no node at run time. Without the native package ``bin/claude.exe`` stays a node stub.
- **Identity.** ``--dangerously-skip-permissions`` is refused as root. HOME must be writable: it
  writes ``~/.claude.json`` and ``~/.claude/`` (``projects/<cwd with / as ->/<session>.jsonl``
  holds the conversation). ``--resume <id>`` needs that file: it finds it from any cwd (the
  session id stays the same), so a retry resumes only if HOME survived the first attempt.
- **Requests.** With ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1`` only
  ``POST /v1/messages``, ``"stream": true``, one per model turn; no title/haiku, quota,
  count_tokens or telemetry call. A 400 is re-sent up to 6 times (variants without thinking
  display, with every tool loaded). Headers: ``x-api-key: $ANTHROPIC_API_KEY``,
  ``anthropic-version: 2023-06-01``, ``anthropic-beta: claude-code-20250219,...``,
  ``x-app: cli``, ``User-Agent: claude-cli/2.1.332 (external, sdk-cli)``,
  ``X-Claude-Code-Session-Id``. Body: ``model`` (default ``claude-opus-5-5``; ``--model`` any
  name), ``max_tokens: 128000`` (``CLAUDE_CODE_MAX_OUTPUT_TOKENS`` lowers it), ``thinking``
  ``{"type": "adaptive"}``, ``context_management``, ``output_config``, ``metadata.user_id``.
- **Where things land.** ``system`` is three text blocks (a billing header line, "You are Claude
  Code...", the long prompt); ``--append-system-prompt`` text ends the third. ``messages[0]`` is
  the user message: a ``<system-reminder>`` text block, then the prompt as its own text block (so
  a ``[script:NAME]`` marker in it is seen). ``messages[1]`` has ``role: "system"`` and holds the
  environment block: `` - Primary working directory: <cwd>`` (string content after the first
  request); a resume adds another one for its cwd.
- **Tools offered.** ``Agent Bash Edit ListAgents Read ReportFindings ScheduleWakeup Skill
  ToolSearch Workflow Write`` (others deferred behind ToolSearch; no Glob/Grep). ``Write``
  ``{file_path, content}``, ``Edit`` ``{file_path, old_string, new_string, replace_all?}``,
  ``Read`` ``{file_path, offset?, limit?, ...}``: ``file_path`` must be absolute. ``Bash``
  ``{command, timeout?, description?, ...}`` runs in the cwd. An unknown tool name gets a
  ``tool_result`` error ("No such tool available"), not a crash.
- **stream-json.** One JSON object a line: ``system/init`` (``session_id``, ``cwd``, ``tools``,
  ``model``...), then an ``assistant`` line per content block (text or tool_use, the message's
  ``usage`` repeated), a ``user`` line per tool_result, and last a ``result``: ``subtype``
  (``success``, ``error_max_turns``...), ``is_error``, ``result`` (final text; None on
  max-turns), ``num_turns``, ``total_cost_usd``, ``usage`` (input, output, cache read/creation
  tokens), ``errors`` (list), ``api_error_status``, ``terminal_reason``. A model error (e.g. 400)
  still has subtype ``success`` but ``is_error: true`` and ``result: "API Error: 400 ..."``.
  Exit code 0 on success, 1 on ``is_error``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.agents.results import RuntimeResult, Verdict
from core.git.secrets import mask_text
from core.models import Usage

PACKAGE = "@anthropic-ai/claude-code"
NATIVE_PACKAGES = tuple(
    f"{PACKAGE}-{p}" for p in ("linux-x64", "linux-arm64", "linux-x64-musl", "linux-arm64-musl")
)
SUMMARY_MAX = 200
MAX_ARG_BYTES = 120 * 1024  # Linux caps one argv string at 128 KiB
_SESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR")
_ENV_SECRETISH = re.compile(r"(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH)", re.I)


# -- where it is, what it needs ---------------------------------------------------------------


def find_claude(configured: str | None) -> Path | None:
    """The Claude Code executable: ``configured`` (MOSAIC_CLAUDE_CODE: a path or a command
    name) or ``claude`` on PATH, resolved through symlinks; None when there is none."""
    name = (configured or "").strip() or "claude"
    found = name if "/" in name else shutil.which(name)
    if not found:
        return None
    path = Path(found).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        return None
    return path


def _package_root(path: Path) -> Path | None:
    """The nearest ancestor holding a ``package.json`` (the npm package of ``path``)."""
    for parent in path.parents:
        if (parent / "package.json").is_file():
            return parent
        if parent.name == "node_modules":
            return None
    return None


def _script_interpreter(binary: Path) -> Path | None:
    """The interpreter of a ``#!`` script (``env node`` looked up on PATH), else None."""
    try:
        with binary.open("rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:
        found = shutil.which(words[-1])
        return Path(found).resolve() if found else None
    return Path(words[0]).resolve()


def claude_binds(binary: Path) -> tuple[Path, ...]:
    """Host paths to bind read-only so that ``binary`` (from :func:`find_claude`) runs as the
    sandbox user: its npm package dir, the native binary's package dir when it lies outside it
    (hoisted), and the interpreter binary when the entry point is a script (the node stub).
    Only those directories or files, never their parents (e.g. a home under ``/root``)."""
    binary = binary.resolve()
    out: list[Path] = []
    root = _package_root(binary)
    if root is None:
        out.append(binary)  # a standalone native build: the file alone
    else:
        out.append(root)
        for name in NATIVE_PACKAGES:
            nested = root / "node_modules" / name
            hoisted = root.parent.parent / name if root.parent.name.startswith("@") else None
            for candidate in (nested, hoisted):
                if candidate is not None and candidate.is_dir():
                    resolved = candidate.resolve()
                    if resolved != root and root not in resolved.parents:
                        out.append(resolved)
    interpreter = _script_interpreter(binary)
    if interpreter is not None and interpreter.is_file():
        out.append(interpreter)
    unique: list[Path] = []
    for path in out:
        if path not in unique:
            unique.append(path)
    return tuple(unique)


# -- how it starts ----------------------------------------------------------------------------


def claude_argv(
    binary: Path | str,
    prompt: str,
    *,
    system_append: str | None,
    resume_session: str | None,
    max_turns: int | None,
    model: str | None = None,
) -> list[str]:
    """``claude -p`` headless, stream-json, permission prompts bypassed; the prompt goes last
    after ``--`` (so a prompt starting with ``-`` is no flag), option values as ``--opt=value``.

    Raises ``ValueError`` for an empty or oversized prompt, a malformed session id or a
    non-positive ``max_turns``.
    """
    if not prompt.strip():
        raise ValueError("the Claude Code prompt is empty")
    for what, text in (("prompt", prompt), ("system prompt", system_append or "")):
        if len(text.encode("utf-8")) > MAX_ARG_BYTES:
            raise ValueError(f"the Claude Code {what} exceeds {MAX_ARG_BYTES} bytes")
    argv = [
        str(binary),
        "-p",
        "--output-format=stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]
    if system_append and system_append.strip():
        argv.append(f"--append-system-prompt={system_append}")
    if resume_session is not None:
        if not _SESSION.match(resume_session):
            raise ValueError(f"invalid Claude Code session id {resume_session!r}")
        argv.append(f"--resume={resume_session}")
    if max_turns is not None:
        if max_turns <= 0:
            raise ValueError(f"max_turns must be positive, got {max_turns}")
        argv.append(f"--max-turns={max_turns}")
    if model:
        argv.append(f"--model={model}")
    return [*argv, "--", prompt]


def claude_env(
    base: dict[str, str],
    *,
    gateway_port: int,
    token: str,
    home: str,
    max_output_tokens: int | None = None,
) -> dict[str, str]:
    """The CLI's whole environment: locale and PATH from ``base`` (nothing else of it: no
    host key, token, proxy or ``ANTHROPIC_*``/``CLAUDE_*`` setting), the gateway as its API
    (``ANTHROPIC_BASE_URL`` on the sandbox's loopback, the per-agent ``token`` as
    ``ANTHROPIC_API_KEY``), ``HOME``, and every kind of non-essential traffic off."""
    if not 0 < gateway_port < 65536:
        raise ValueError(f"invalid gateway port {gateway_port}")
    env = {k: base[k] for k in _ENV_KEEP if k in base and not _ENV_SECRETISH.search(k)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{gateway_port}",
        ANTHROPIC_API_KEY=token,
        HOME=home,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
        DISABLE_INSTALLATION_CHECKS="1",
        CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY="1",
        CLAUDE_CODE_DISABLE_TERMINAL_TITLE="1",
    )
    if max_output_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_output_tokens)
    return env


# -- what it prints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    """One tool call: its name and a short, masked summary of its input."""

    tool: str
    summary: str


@dataclass
class ClaudeResult:
    """The final ``result`` line. ``usage.input_tokens`` counts cache reads and writes too
    (also given apart); ``usage.cost_usd`` is the CLI's own estimate."""

    summary: str
    turns: int
    usage: Usage
    cost_usd: float
    is_error: bool
    error: str | None
    subtype: str = ""
    session_id: str | None = None
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    budget: Literal["turns"] | None = None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _short(text: str) -> str:
    text = mask_text(" ".join(text.split()))
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 3] + "..."


_PATH_KEYS = ("file_path", "notebook_path", "path")
_TEXT_KEYS = ("command", "pattern", "url", "query", "description", "prompt", "skill")


@dataclass
class StreamParser:
    """Feed it Claude Code's stdout line by line; it never raises on what it is fed."""

    cwd: str | None = None
    """The agent's working directory (paths in summaries are shown relative to it); the
    ``system/init`` line's ``cwd`` replaces it."""
    session_id: str | None = None
    result: ClaudeResult | None = None
    last_text: str = ""
    garbage: int = 0
    _seen: set[str] = field(default_factory=set)

    def feed(self, line: str) -> list[Activity]:
        try:
            data = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            if line.strip():
                self.garbage += 1
            return []
        if not isinstance(data, dict):
            self.garbage += 1
            return []
        try:
            return self._message(data)
        except (ValueError, TypeError, KeyError, AttributeError):
            self.garbage += 1
            return []

    def _message(self, data: dict[str, Any]) -> list[Activity]:
        kind = data.get("type")
        if isinstance(data.get("session_id"), str) and self.session_id is None:
            self.session_id = data["session_id"]
        if kind == "system" and data.get("subtype") == "init":
            if isinstance(data.get("session_id"), str):
                self.session_id = data["session_id"]
            if isinstance(data.get("cwd"), str):
                self.cwd = data["cwd"]
            return []
        if kind == "result":
            self.result = self._result(data)
            return []
        if kind != "assistant":
            return []
        message = data.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        activities: list[Activity] = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                if block["text"].strip():
                    self.last_text = block["text"]
            elif block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                ident = block.get("id")
                if isinstance(ident, str):
                    if ident in self._seen:
                        continue
                    self._seen.add(ident)
                tool_input = block.get("input")
                args = tool_input if isinstance(tool_input, dict) else {}
                activities.append(Activity(_short(block["name"]), self.summarize(args)))
        return activities

    def summarize(self, args: dict[str, Any]) -> str:
        """The input's gist: a path (relative to the cwd), else a command, pattern, url..."""
        for key in _PATH_KEYS:
            value = args.get(key)
            if isinstance(value, str) and value:
                return _short(self._relative(value))
        for key in _TEXT_KEYS:
            value = args.get(key)
            if isinstance(value, str) and value:
                return _short(value)
        return _short(json.dumps(args, ensure_ascii=False, sort_keys=True)) if args else ""

    def _relative(self, path: str) -> str:
        if self.cwd and os.path.isabs(path):
            rel = os.path.relpath(os.path.normpath(path), os.path.normpath(self.cwd))
            if rel != ".." and not rel.startswith("../"):
                return rel
        return path

    def _result(self, data: dict[str, Any]) -> ClaudeResult:
        raw = data.get("usage")
        raw_usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
        cache_read = _int(raw_usage.get("cache_read_input_tokens"))
        cache_write = _int(raw_usage.get("cache_creation_input_tokens"))
        cost = data.get("total_cost_usd")
        cost_usd = float(cost) if isinstance(cost, int | float) and cost > 0 else 0.0
        turns = _int(data.get("num_turns"))
        usage = Usage(
            input_tokens=_int(raw_usage.get("input_tokens")) + cache_read + cache_write,
            output_tokens=_int(raw_usage.get("output_tokens")),
            cost_usd=cost_usd,
            turns=turns,
        )
        final = data.get("result")
        text = final if isinstance(final, str) else ""
        subtype = str(data.get("subtype") or "")
        is_error = bool(data.get("is_error")) or subtype.startswith("error")
        error = None
        if is_error:
            errors = data.get("errors")
            named = [str(e) for e in errors if e] if isinstance(errors, list) else []
            error = mask_text("; ".join(named) or text or subtype or "Claude Code failed")
        return ClaudeResult(
            summary=mask_text(text),
            turns=turns,
            usage=usage,
            cost_usd=cost_usd,
            is_error=is_error,
            error=error,
            subtype=subtype,
            session_id=data["session_id"] if isinstance(data.get("session_id"), str) else None,
            cache_read_input_tokens=cache_read,
            cache_creation_input_tokens=cache_write,
            budget="turns" if subtype == "error_max_turns" else None,
        )

    def verdict(self) -> Verdict | None:
        """A reviewer's verdict (``VERDICT: approve|request_changes`` and ``- `` comments) in
        the final text, parsed exactly as the builtin runtime parses its own; None without."""
        from core.agents.runtime import parse_verdict  # the builtin's parser, one definition

        text = self.result.summary if self.result is not None else ""
        parsed = parse_verdict(text) if text else None
        return Verdict.model_validate(parsed) if parsed else None

    def runtime_result(self, role: str) -> RuntimeResult:
        """The run as the builtin runtime reports one (``core.agents.results``), so the finish
        stage treats both alike; no ``result`` line (killed, crashed) is a failure."""
        result = self.result
        if result is None:
            return RuntimeResult(
                status="failed",
                summary=mask_text(self.last_text),
                error="Claude Code ended without a result",
            )
        failed = result.is_error
        return RuntimeResult(
            status="failed" if failed else "completed",
            summary=result.summary,
            verdict=self.verdict() if role == "reviewer" and not failed else None,
            usage=result.usage,
            error=result.error,
            budget=result.budget,
        )
