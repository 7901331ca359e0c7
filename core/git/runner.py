"""The one place that runs git: hardened environment, no hooks, no prompts, readable errors.

Every orchestrator git call goes through :func:`git` / :func:`run_git`. They run git as an asyncio
subprocess (never blocking the event loop) with:

- ``-c`` overrides that neutralise configuration an agent could have planted in a repository:
  hooks (``core.hooksPath=/dev/null``), ``core.fsmonitor``, ``core.askPass``, gpg signing,
  automatic gc;
- an environment without the caller's ``GIT_*`` variables (so an inherited ``GIT_DIR`` or
  ``GIT_CONFIG_*`` cannot redirect us), ``GIT_CONFIG_NOSYSTEM=1``, ``GIT_TERMINAL_PROMPT=0``,
  ``GIT_NO_REPLACE_OBJECTS=1``, ssh in batch mode, the C locale, and no controlling terminal;
- an explicit ``GIT_DIR``/``GIT_WORK_TREE`` when given, so a worktree's ``.git`` file (which the
  agent could rewrite) is never trusted;
- with ``credentials`` (a repository URL's user and token, which are never stored on disk), an
  inline credential helper fed from that one process's environment
  (:mod:`core.git.credentials`); its output is scrubbed of the token.

Nothing here prompts: ``GIT_TERMINAL_PROMPT=0`` refuses the terminal and ``core.askPass=`` (empty)
switches off both the configured askpass and ``SSH_ASKPASS``; an operator's explicit
``GIT_ASKPASS`` is kept for commands without credentials and dropped for those with them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.git.credentials import Credentials, helper_config
from core.git.errors import GitError

log = logging.getLogger(__name__)

_OVERRIDES: tuple[str, ...] = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "core.askPass=",
    "core.quotePath=false",
    "core.packedRefsTimeout=10000",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "submodule.recurse=false",
    "protocol.ext.allow=never",
    "color.ui=false",
    "advice.detachedHead=false",
    "init.defaultBranch=main",
    # Worktrees belong to the sandbox user, not to us. Ownership checks guard against a planted
    # repository config; ours (the clone cache's) is never writable by an agent, and hooks,
    # fsmonitor and the like are off above.
    "safe.directory=*",
)
_KEEP_GIT_ENV = frozenset({"GIT_SSH_COMMAND", "GIT_SSH", "GIT_SSH_VARIANT", "GIT_ASKPASS"})
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_TAIL_CHARS = 800


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (``https://user:token@host`` -> ``https://***@host``)."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def tail(text: str, limit: int = _TAIL_CHARS) -> str:
    """The last ``limit`` characters of ``text``, stripped and redacted."""
    text = redact(text.strip())
    return text if len(text) <= limit else "..." + text[-limit:]


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every orchestrator git process runs with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_NO_REPLACE_OBJECTS="1",
        GIT_ATTR_NOSYSTEM="1",
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
        LANGUAGE="C",
    )
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    if extra:
        env.update(extra)
    return env


def git_argv(*args: str, config: Sequence[str] = ()) -> list[str]:
    """``git -c ... <args>``: the hardened command line (``config``: more ``-c``, after ours)."""
    argv = ["git"]
    for override in (*_OVERRIDES, *config):
        argv += ["-c", override]
    argv += list(args)
    return argv


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


def _describe(args: tuple[str, ...]) -> str:
    return redact("git " + " ".join(a for a in args[:3]))


async def run_git_bytes(
    *args: str,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    credentials: Credentials | None = None,
) -> tuple[int, bytes, bytes]:
    """Run git; return ``(returncode, stdout, stderr)`` as bytes, whatever the exit code.

    With ``credentials``, git may authenticate with them (and only this process sees them); the
    output is returned as git wrote it: callers that show it use :func:`run_git`, which scrubs.
    """
    extra = dict(env or {})
    if git_dir is not None:
        extra["GIT_DIR"] = str(git_dir)
    if work_tree is not None:
        extra["GIT_WORK_TREE"] = str(work_tree)
    config: tuple[str, ...] = ()
    if credentials is not None:
        config, secret_env = helper_config(credentials)
        extra.update(secret_env)
    full_env = git_env(extra)
    if credentials is not None:
        full_env.pop("GIT_ASKPASS", None)  # the helper answers; nothing else is asked
        full_env.pop("SSH_ASKPASS", None)
    try:
        proc = await asyncio.create_subprocess_exec(
            *git_argv(*args, config=config),
            cwd=str(cwd) if cwd is not None else None,
            env=full_env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise GitError(f"cannot run {_describe(args)}: {exc.strerror}: {exc.filename}") from exc
    try:
        out, err = await proc.communicate(stdin)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def run_git(
    *args: str,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    credentials: Credentials | None = None,
) -> GitResult:
    """Run git and return its result whatever the exit code (for commands whose code means data).

    With ``credentials``, their secret is scrubbed from stdout and stderr (git does not echo it,
    but nothing it prints can then carry it into an error, a log or a status).
    """
    code, out, err = await run_git_bytes(
        *args,
        cwd=cwd,
        git_dir=git_dir,
        work_tree=work_tree,
        env=env,
        stdin=stdin.encode() if stdin is not None else None,
        credentials=credentials,
    )
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if credentials is not None:
        stdout, stderr = credentials.scrub(stdout), credentials.scrub(stderr)
    return GitResult(code, stdout, stderr)


def failure(args: tuple[str, ...], result: GitResult, what: str | None = None) -> GitError:
    """A :class:`GitError` describing a failed git call (stderr tail, credentials redacted)."""
    detail = tail(result.stderr or result.stdout) or "no output"
    name = what or _describe(args)
    return GitError(
        f"{name} failed (exit {result.returncode}): {detail}",
        command=_describe(args),
        returncode=result.returncode,
        stderr=tail(result.stderr),
    )


async def git(
    *args: str,
    cwd: Path | None = None,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    credentials: Credentials | None = None,
) -> str:
    """Run git; return its stdout, or raise :class:`GitError` with a readable message."""
    result = await run_git(
        *args,
        cwd=cwd,
        git_dir=git_dir,
        work_tree=work_tree,
        env=env,
        stdin=stdin,
        credentials=credentials,
    )
    if result.returncode != 0:
        error = failure(args, result)
        log.debug("git failed", extra={"command": error.command, "returncode": result.returncode})
        raise error
    return result.stdout
