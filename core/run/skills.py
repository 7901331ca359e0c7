"""Skills (SPEC §15): folders under ``MOSAIC_SKILLS_DIR``, each holding a ``SKILL.md``.

A spawn names them in ``context.skills``; an unknown name is refused (400) before anything is
created. The builtin runtime appends each ``SKILL.md`` to its system prompt; claude-code sees the
folders read-only as ``~/.claude/skills/<name>/``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from core.errors import ValidationFailed
from core.safeio import RefusedFile, read_text_capped

SKILL_FILE = "SKILL.md"
SKILL_MAX_BYTES = 256 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Skill:
    name: str
    path: Path
    """The skill's folder (a real directory directly under the skills dir)."""
    text: str
    """Its ``SKILL.md``."""


def resolve_skills(skills_dir: Path | None, names: list[str]) -> list[Skill]:
    """The named skills, or ``ValidationFailed`` naming the first unknown one."""
    if not names:
        return []
    if skills_dir is None:
        raise ValidationFailed(
            f"unknown skill {names[0]!r}: no skills are configured (MOSAIC_SKILLS_DIR)",
            details={"field": "context.skills"},
        )
    skills: list[Skill] = []
    for name in dict.fromkeys(names):
        folder = skills_dir / name
        if not _NAME.match(name) or not _real_dir(folder):
            raise ValidationFailed(
                f"unknown skill {name!r}: no folder of that name in MOSAIC_SKILLS_DIR",
                details={"field": "context.skills", "skill": name},
            )
        try:
            text = read_text_capped(folder / SKILL_FILE, SKILL_MAX_BYTES, root=skills_dir)
        except (RefusedFile, OSError) as exc:
            text, why = None, f": {exc}"
        else:
            why = ""
        if text is None:
            raise ValidationFailed(
                f"skill {name!r} has no readable {SKILL_FILE}{why}",
                details={"field": "context.skills", "skill": name},
            )
        skills.append(Skill(name, folder, text))
    return skills


def skill_names(skills_dir: Path | None) -> list[str]:
    """The names a spawn may use: folders of ``skills_dir`` holding a ``SKILL.md``."""
    if skills_dir is None:
        return []
    try:
        entries = sorted(os.scandir(skills_dir), key=lambda e: e.name)
    except OSError:
        return []
    return [
        e.name
        for e in entries
        if _NAME.match(e.name) and _real_dir(Path(e.path)) and (Path(e.path) / SKILL_FILE).is_file()
    ]


def skills_prompt(skills: list[Skill]) -> str:
    """What the builtin runtime appends to its system prompt."""
    return "".join(f"\n\n# Skill: {s.name}\n\n{s.text.strip()}\n" for s in skills)


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False
