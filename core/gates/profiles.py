"""Gate profiles as data: ``config/gates.toml`` loaded and validated, and the choice of gates."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core.errors import ValidationFailed
from core.gates.models import GateConfigError, Phase

if TYPE_CHECKING:
    from core.gates.repo_config import RepoGateConfig

CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "gates.toml"
AI_REVIEW = "ai_review"
CUSTOM = "custom"


class GatesConfig(BaseModel):
    """The shipped gate configuration (validated once, at load)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_timeout_s: float = Field(default=600.0, gt=0)
    output_tail_chars: int = Field(default=2000, ge=0)
    phases: dict[str, Literal["pre", "post"]]
    """Every known gate, in run order, with its phase."""
    profiles: dict[str, list[str]]
    default_profile: dict[str, str]
    thresholds: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> GatesConfig:
        for profile, gates in self.profiles.items():
            unknown = [g for g in gates if g not in self.phases]
            if unknown:
                raise ValueError(f"profile {profile!r} names unknown gates {unknown}")
        if CUSTOM not in self.profiles:
            raise ValueError("profiles must include 'custom'")
        for agent_type, profile in self.default_profile.items():
            if profile not in self.profiles:
                raise ValueError(f"default profile of {agent_type!r} is unknown: {profile!r}")
        return self

    @property
    def gate_names(self) -> list[str]:
        return list(self.phases)

    def phase_of(self, gate: str) -> Phase:
        return self.phases[gate]

    def coverage_threshold(self) -> float:
        return self.thresholds.get("coverage", 85.0)


def load_gates_config(path: Path = CONFIG_PATH) -> GatesConfig:
    """Read and validate a gates configuration file; a bad file raises ``GateConfigError``."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise GateConfigError(f"cannot read gate config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GateConfigError(f"gate config {path} is not valid TOML: {exc}") from exc
    try:
        return GatesConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise GateConfigError(f"gate config {path} is invalid at {where}: {first['msg']}") from exc


@functools.cache
def default_config() -> GatesConfig:
    """The shipped ``config/gates.toml`` (read once per process)."""
    return load_gates_config(CONFIG_PATH)


def validate_gate_names(names: list[str], config: GatesConfig | None = None) -> list[str]:
    """Normalise gate names from a spawn request; an unknown name raises ``ValidationFailed``.

    Names are stripped and lower-cased, ``-`` is accepted for ``_`` (``ai-review``), and
    duplicates are dropped (first occurrence kept).
    """
    cfg = config or default_config()
    known = cfg.gate_names
    out: list[str] = []
    unknown: list[str] = []
    for raw in names:
        name = str(raw).strip().lower().replace("-", "_")
        if name not in known:
            unknown.append(str(raw))
        elif name not in out:
            out.append(name)
    if unknown:
        raise ValidationFailed(
            f"unknown gate(s) {', '.join(repr(u) for u in unknown)}; "
            f"known gates: {', '.join(known)}",
            details={"unknown": unknown, "known": known},
        )
    return out


def resolve_profile(profile: str | None, agent_type: str, config: GatesConfig | None = None) -> str:
    """The profile to use: the one given, else the agent type's default."""
    cfg = config or default_config()
    if profile:
        name = profile.strip().lower()
        if name not in cfg.profiles:
            raise ValidationFailed(
                f"unknown gate profile {profile!r}; known profiles: {', '.join(cfg.profiles)}"
            )
        return name
    try:
        return cfg.default_profile[agent_type]
    except KeyError:
        raise ValidationFailed(
            f"no default gate profile for agent type {agent_type!r}; name a gateProfile"
        ) from None


def gates_for(
    profile: str | None,
    agent_type: str,
    custom: list[str] | None,
    repo_config: RepoGateConfig | None,
    *,
    config: GatesConfig | None = None,
) -> list[str]:
    """The gates a run must pass, in run order.

    ``custom`` profile: the gates named in the request, else the gates the repository's
    ``.mosaic/gates.toml`` lists; an empty list means the custom profile names no gates (the
    runners report that as an error rather than passing silently).
    """
    cfg = config or default_config()
    name = resolve_profile(profile, agent_type, cfg)
    if name == CUSTOM:
        if custom:
            chosen = validate_gate_names(custom, cfg)
        elif repo_config is not None:
            chosen = repo_config.listed_gates()
        else:
            chosen = []
    else:
        chosen = list(cfg.profiles[name])
    order = {g: i for i, g in enumerate(cfg.gate_names)}
    return sorted(chosen, key=order.__getitem__)


def split_by_phase(gates: list[str], phase: Phase, config: GatesConfig | None = None) -> list[str]:
    cfg = config or default_config()
    return [g for g in gates if cfg.phase_of(g) == phase]
