"""Claude Code, the CLI: where it is, what its sandbox binds, how it starts, what it prints.

The claude-code runtime (SPEC §15) runs ``claude -p`` in the agent's sandbox; this module holds
the pure parts: :func:`find_claude`, :func:`claude_binds`, :func:`claude_argv`,
:func:`claude_env`, and re-exports :class:`StreamParser` of :mod:`core.agents.claude_stream`
(its ``--output-format stream-json`` lines -> activities, session id, result, verdict).

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
- **Errors.** The gateway's 402 (token budget) ends the run at once (``api_error_status: 402``);
  a 429/529 is retried by the CLI itself (up to 10 times, honouring ``retry-after``), each retry
  a ``system/api_retry`` line.
- **Skills.** Every ``~/.claude/skills/<name>/SKILL.md`` is offered to the model (in the
  environment message: ``- <name>: <description>``), read-only or through a symlinked
  ``skills`` dir alike; front matter is optional (else the description is the first line), but
  only skills with front matter show in ``system/init``'s ``skills``.
- **Resources.** ~215 MB resident, ~1 s to its first request; a short session ran in a 256 MB
  cgroup.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from core.agents.claude_stream import (
    MAX_LINE_BYTES,
    SUMMARY_MAX,
    Activity,
    ClaudeResult,
    StreamParser,
)

PACKAGE = "@anthropic-ai/claude-code"
NATIVE_PACKAGES = tuple(
    f"{PACKAGE}-{p}" for p in ("linux-x64", "linux-arm64", "linux-x64-musl", "linux-arm64-musl")
)
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


__all__ = [
    "MAX_ARG_BYTES",
    "MAX_LINE_BYTES",
    "NATIVE_PACKAGES",
    "PACKAGE",
    "SUMMARY_MAX",
    "Activity",
    "ClaudeResult",
    "StreamParser",
    "claude_argv",
    "claude_binds",
    "claude_env",
    "find_claude",
]
