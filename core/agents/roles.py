"""Role prompts and the runtime's config: what the spawner hands the agent runtime.

Prompts live in editable files ``config/prompts/{worker,reviewer,tester}.md``: the text after a
``<!-- system -->`` line is the system prompt, the text after a ``<!-- prompt -->`` line the first
user message. Placeholders ``{{task_id}}``, ``{{agent_type}}``, ``{{work_items}}``, ``{{skills}}``
and ``{{instructions}}`` are filled in one pass, so braces in user text are never re-expanded.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.agents.errors import PromptError
from core.models import AgentType

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "config" / "prompts"
PLACEHOLDERS = frozenset({"task_id", "agent_type", "work_items", "skills", "instructions"})
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
_SECTION = re.compile(r"^<!--\s*(system|prompt)\s*-->[ \t]*$", re.M)


def runtime_path() -> Path:
    """The standalone runtime script; the spawner binds it read-only into the sandbox."""
    return Path(__file__).resolve().parent / "runtime.py"


def runtime_argv(config_path: Path, python: str | None = None) -> list[str]:
    """``<python> -I runtime.py --config <file>`` (``-I``: no user site, no PYTHON* variables)."""
    return [python or sys.executable, "-I", str(runtime_path()), "--config", str(config_path)]


def runtime_ro_binds() -> tuple[Path, ...]:
    """Host paths the runtime needs visible (read-only): the script and the Python environment."""
    paths = [runtime_path(), Path(sys.prefix).resolve()]
    base = Path(sys.base_prefix).resolve()
    if base not in paths and not str(base).startswith("/usr"):
        paths.append(base)
    return tuple(paths)


def _render(template: str, values: dict[str, str], source: str) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise PromptError(f"{source}: unknown placeholder {{{{{name}}}}}")
        return values[name]

    return _PLACEHOLDER.sub(sub, template).strip() + "\n"


def load_template(agent_type: AgentType | str, prompts_dir: Path | None = None) -> tuple[str, str]:
    """The (system, prompt) templates of a role."""
    try:
        role = AgentType(agent_type)
    except ValueError:
        raise PromptError(f"unknown agent type {agent_type!r}") from None
    path = (prompts_dir or PROMPTS_DIR) / f"{role.value}.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"cannot read prompt file {path}: {exc.strerror}") from None
    parts = _SECTION.split(text)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    if "system" not in sections or "prompt" not in sections:
        raise PromptError(f"{path}: needs a '<!-- system -->' and a '<!-- prompt -->' section")
    return sections["system"], sections["prompt"]


def build_prompts(
    agent_type: AgentType | str,
    task_id: str,
    work_items: Sequence[str],
    skills: Sequence[str],
    instructions: str | None,
    *,
    prompts_dir: Path | None = None,
) -> tuple[str, str]:
    """The (system prompt, first user message) of an agent of ``agent_type``."""
    system_t, prompt_t = load_template(agent_type, prompts_dir)
    values = {
        "task_id": task_id,
        "agent_type": AgentType(agent_type).value,
        "work_items": ", ".join(work_items) or "(none given)",
        "skills": ", ".join(skills) or "(none given)",
        "instructions": (instructions or "").strip() or "(none)",
    }
    source = f"prompt of {AgentType(agent_type).value}"
    return _render(system_t, values, source), _render(prompt_t, values, source)


class RuntimeConfig(BaseModel):
    """The runtime's config file (documented in ``runtime.py``); validated before it is written."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1)
    role: AgentType
    system: str
    prompt: str = Field(min_length=1)
    model: str = Field(min_length=1)
    socket: str = Field(min_length=1)
    token: str = Field(min_length=1)
    workdir: str = Field(min_length=1)
    transcript: str = Field(min_length=1)
    max_turns: int = Field(default=50, gt=0)
    max_tokens: int = Field(default=2_000_000, gt=0)
    max_wall_s: float = Field(default=3600.0, gt=0)
    command_timeout_s: float = Field(default=600.0, gt=0)
    max_output_tokens_per_turn: int = Field(default=8192, gt=0)


def build_runtime_config(
    *,
    agent_id: str,
    role: AgentType | str,
    system: str,
    prompt: str,
    model: str,
    socket: Path | str,
    token: str,
    workdir: Path | str,
    transcript: Path | str,
    max_turns: int = 50,
    max_tokens: int = 2_000_000,
    max_wall_s: float = 3600.0,
    command_timeout_s: float = 600.0,
    max_output_tokens_per_turn: int = 8192,
) -> dict[str, Any]:
    """The JSON-ready config of one runtime (write it where the sandbox can read it).

    It holds the per-agent gateway token, never the API key.
    """
    config = RuntimeConfig(
        agent_id=agent_id,
        role=AgentType(role),
        system=system,
        prompt=prompt,
        model=model,
        socket=str(socket),
        token=token,
        workdir=str(workdir),
        transcript=str(transcript),
        max_turns=max_turns,
        max_tokens=max_tokens,
        max_wall_s=max_wall_s,
        command_timeout_s=command_timeout_s,
        max_output_tokens_per_turn=max_output_tokens_per_turn,
    )
    return config.model_dump(mode="json")
