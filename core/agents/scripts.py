"""Scripts for the scripted model: assistant turns replayed per conversation.

A script file (``config/scripts/NAME.json``) holds::

    {"name": "worker-hello",
     "description": "...",
     "turns": [[{"type": "text", "text": "..."},
                {"type": "tool_use", "name": "write_file", "input": {...}}],
               ...],
     "final": "the text answer given once the turns are used up",
     "repeat": false}

Turn N of a conversation is ``turns[N]`` where N is the number of assistant messages already in
the request; past the end the model answers ``final`` (no tool call, so the session ends), or,
with ``"repeat": true``, starts the turns over (a runaway agent). Strings may hold placeholders
filled at serve time, so that the repository holds no realistic secret:
``{{fake_aws_key_id}}`` and ``{{fake_aws_secret}}`` (obviously fake, but they match the AWS rules).
``{{cwd}}`` is the agent's working directory as the request states it (Claude Code's environment
block, see ``scripted.request_cwd``), so that a script can give Claude Code's tools the absolute
``file_path`` they require; without a stated directory it stays as written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.agents.errors import ScriptError

DEFAULT_SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "config" / "scripts"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _fake_values() -> dict[str, str]:
    # Assembled here, never stored whole: "AKIA" + 16 of [A-Z0-9] is the access key id rule.
    key_id = "AKIA" + "MOSAIC" + "FAKE" + "TEST" + "01"
    secret = base64.b64encode(hashlib.sha256(b"mosaic-fake-secret").digest()[:30]).decode()
    return {"fake_aws_key_id": key_id, "fake_aws_secret": secret}


FAKE_VALUES = _fake_values()


def expand(value: Any, values: dict[str, str] | None = None) -> Any:
    """Fill the ``{{placeholders}}`` of every string in ``value``; unknown ones stay.

    ``values`` adds per-request placeholders (``cwd``) to the fake secrets.
    """
    table = {**FAKE_VALUES, **values} if values else FAKE_VALUES
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: table.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [expand(v, values) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, values) for k, v in value.items()}
    return value


@dataclass
class Script:
    name: str
    turns: list[list[dict[str, Any]]]
    final: str = "Done."
    repeat: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def turn(self, index: int, *, cwd: str | None = None) -> list[dict[str, Any]]:
        """The content blocks of assistant turn ``index`` (0-based); ``cwd`` fills ``{{cwd}}``."""
        if self.turns and (index < len(self.turns) or self.repeat):
            blocks = self.turns[index % len(self.turns)]
        else:
            blocks = [{"type": "text", "text": self.final}]
        result: list[dict[str, Any]] = expand(blocks, {"cwd": cwd} if cwd else None)
        return result

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "script") -> Script:
        if not isinstance(raw, dict):
            raise ScriptError(f"{source}: a script must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ScriptError(f"{source}: 'name' must be a short name of letters, digits, '.-_'")
        turns = raw.get("turns", [])
        if not isinstance(turns, list) or not all(isinstance(t, list) for t in turns):
            raise ScriptError(f"{source}: 'turns' must be a list of lists of content blocks")
        for number, turn in enumerate(turns, 1):
            for block in turn:
                _check_block(block, f"{source}: turn {number}")
        final = raw.get("final", "Done.")
        if not isinstance(final, str):
            raise ScriptError(f"{source}: 'final' must be a string")
        return cls(
            name=name,
            turns=turns,
            final=final,
            repeat=bool(raw.get("repeat", False)),
            description=str(raw.get("description", "")),
        )


def _check_block(block: Any, where: str) -> None:
    if not isinstance(block, dict):
        raise ScriptError(f"{where}: a content block must be an object")
    kind = block.get("type")
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise ScriptError(f"{where}: a text block needs a string 'text'")
    elif kind == "tool_use":
        if not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
            raise ScriptError(f"{where}: a tool_use block needs 'name' and an object 'input'")
    else:
        raise ScriptError(f"{where}: unknown content block type {kind!r}")


def load_script(path: Path) -> Script:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"cannot read script {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ScriptError(f"script {path} is not valid JSON: {exc}") from None
    return Script.from_dict(raw, source=str(path))


def load_scripts(directory: Path | None = None) -> dict[str, Script]:
    """Every ``*.json`` script of ``directory`` (default ``config/scripts``), by name."""
    directory = directory or DEFAULT_SCRIPTS_DIR
    if not directory.is_dir():
        raise ScriptError(f"script directory {directory} does not exist")
    scripts: dict[str, Script] = {}
    for path in sorted(directory.glob("*.json")):
        script = load_script(path)
        scripts[script.name] = script
    return scripts
