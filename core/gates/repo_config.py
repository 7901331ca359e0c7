"""A repository's own gate configuration: ``.mosaic/gates.toml``.

```toml
coverage_threshold = 80      # optional; percent (also accepted inside [gates])
timeout_s = 900              # optional; per-gate timeout in seconds

[gates]
tests = "pytest -q"          # a command (run with sh -c in the worktree)
coverage = "pytest -q --cov=src --cov-report=term"   # its output must contain a percentage
lint = false                 # false: the gate is disabled (reported skipped, with the reason)
ai_review = true             # true: run the gate with its default behaviour (detection)
```
The gates listed in ``[gates]`` (with any value but ``false``) are the gates of the ``custom``
profile when the spawn request names none.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
)

from core.gates.models import GateConfigError
from core.gates.profiles import AI_REVIEW, default_config
from core.git.runner import git_argv, git_env
from core.safeio import MiB, RefusedFile, read_text_capped

REPO_CONFIG = Path(".mosaic") / "gates.toml"
REPO_CONFIG_MAX = MiB
"""A larger ``.mosaic/gates.toml`` is refused (never read whole)."""


class RepoGateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gates: dict[str, StrictStr | StrictBool] = Field(default_factory=dict)
    coverage_threshold: float | None = Field(default=None, ge=0, le=100)
    timeout_s: float | None = Field(default=None, gt=0, le=86_400)

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, gates: dict[str, str | bool]) -> dict[str, str | bool]:
        known = default_config().gate_names
        for name, value in gates.items():
            if name not in known:
                raise ValueError(f"unknown gate {name!r} (known: {', '.join(known)})")
            if name == AI_REVIEW and isinstance(value, str):
                raise ValueError("ai_review takes true or false, not a command")
            if isinstance(value, str) and not value.strip():
                raise ValueError(f"gate {name!r} has an empty command (use false to disable it)")
        return gates

    def listed_gates(self) -> list[str]:
        """Gates the file lists and does not disable, in run order."""
        return [g for g in default_config().gate_names if self.gates.get(g, False) is not False]

    def command_for(self, gate: str) -> str | None:
        value = self.gates.get(gate)
        return value.strip() if isinstance(value, str) else None

    def disabled(self, gate: str) -> bool:
        return self.gates.get(gate) is False


def parse_repo_config(text: str, source: str = str(REPO_CONFIG)) -> RepoGateConfig:
    """Validate the text of a ``.mosaic/gates.toml``; problems raise ``GateConfigError``."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise GateConfigError(f"{source} is not valid TOML: {exc}") from exc
    gates = raw.get("gates")
    if isinstance(gates, dict) and "coverage_threshold" in gates:
        gates = dict(gates)
        threshold = gates.pop("coverage_threshold")
        if "coverage_threshold" in raw and raw["coverage_threshold"] != threshold:
            raise GateConfigError(
                f"{source}: coverage_threshold is set twice with different values"
            )
        raw = {**raw, "gates": gates, "coverage_threshold": threshold}
    try:
        return RepoGateConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        msg = first["msg"].removeprefix("Value error, ")
        raise GateConfigError(f"{source} is invalid at {where}: {msg}") from exc


def load_repo_config(worktree: Path, ref: str | None = None) -> RepoGateConfig | None:
    """The repository's ``.mosaic/gates.toml``, or None when it has none.

    With ``ref`` (a commit), the file is read from that commit rather than from the working
    tree. Blocking (file or git I/O): call it through ``asyncio.to_thread`` from async code.
    """
    if ref is None:
        # the worktree is the agent's: no link followed (nor .mosaic as a link), bounded size
        try:
            text = read_text_capped(REPO_CONFIG, REPO_CONFIG_MAX, root=worktree)
        except RefusedFile as exc:
            raise GateConfigError(f"cannot read {REPO_CONFIG}: {exc.why}") from exc
        except OSError as exc:
            raise GateConfigError(f"cannot read {REPO_CONFIG}: {exc.strerror or exc}") from exc
        return None if text is None else parse_repo_config(text)
    text_at = _read_at_commit(worktree, ref)
    return None if text_at is None else parse_repo_config(text_at, f"{REPO_CONFIG} at {ref[:12]}")


def _git(worktree: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """A blocking git call through the hardened runner's command line and environment."""
    return subprocess.run(
        git_argv("-C", str(worktree), *args),
        env=git_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        timeout=60,
    )


def _read_at_commit(worktree: Path, ref: str) -> str | None:
    if ref.startswith("-"):
        raise GateConfigError(f"invalid commit {ref!r}")
    verify = _git(worktree, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if verify.returncode != 0:
        raise GateConfigError(f"cannot read {REPO_CONFIG}: commit {ref!r} not found in {worktree}")
    listed = _git(worktree, "ls-tree", "--long", ref, "--", REPO_CONFIG.as_posix())
    if not listed.stdout.strip():
        return None
    fields = listed.stdout.split(maxsplit=4)  # mode type object size path
    if len(fields) < 4 or fields[1] != b"blob" or fields[0] == b"120000":
        raise GateConfigError(f"{REPO_CONFIG} at {ref[:12]} is not a regular file")
    if not fields[3].isdigit() or int(fields[3]) > REPO_CONFIG_MAX:
        raise GateConfigError(f"{REPO_CONFIG} at {ref[:12]} is larger than 1 MiB")
    shown = _git(worktree, "show", f"{ref}:{REPO_CONFIG.as_posix()}")
    if shown.returncode != 0:
        err = shown.stderr.decode(errors="replace").strip()
        raise GateConfigError(f"cannot read {REPO_CONFIG} at {ref[:12]}: {err}")
    try:
        return shown.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GateConfigError(f"{REPO_CONFIG} at {ref[:12]} is not UTF-8: {exc}") from exc
