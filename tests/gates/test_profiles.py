"""Profiles as data (config/gates.toml) and the choice of gates for a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ValidationFailed
from core.gates import (
    GateConfigError,
    default_config,
    gates_for,
    load_gates_config,
    parse_repo_config,
    resolve_profile,
    validate_gate_names,
)
from core.gates.profiles import CONFIG_PATH, split_by_phase

STRICT = ["typecheck", "lint", "tests", "coverage", "build", "integration", "ai_review"]
STANDARD = ["typecheck", "lint", "tests", "coverage"]


def test_shipped_config_matches_the_spec_table() -> None:
    cfg = default_config()
    assert CONFIG_PATH.name == "gates.toml" and CONFIG_PATH.parent.name == "config"
    assert cfg.profiles["strict"] == STRICT
    assert cfg.profiles["standard"] == STANDARD
    assert cfg.profiles["minimal"] == ["tests"]
    assert cfg.coverage_threshold() == 85.0
    assert cfg.default_timeout_s == 600.0
    assert [g for g in cfg.gate_names if cfg.phase_of(g) == "pre"] == ["typecheck", "lint"]


@pytest.mark.parametrize(
    ("agent_type", "expected"),
    [("worker", STANDARD), ("reviewer", STRICT), ("tester", ["tests"])],
)
def test_default_profile_by_agent_type(agent_type: str, expected: list[str]) -> None:
    assert gates_for(None, agent_type, None, None) == expected
    assert gates_for("", agent_type, None, None) == expected


@pytest.mark.parametrize(
    ("profile", "expected"),
    [("strict", STRICT), ("standard", STANDARD), ("minimal", ["tests"]), ("MINIMAL", ["tests"])],
)
def test_named_profile_overrides_the_default(profile: str, expected: list[str]) -> None:
    assert gates_for(profile, "tester", None, None) == expected


def test_custom_profile_uses_the_request_gates_in_run_order() -> None:
    assert gates_for("custom", "worker", ["tests", "Lint", "ai-review"], None) == [
        "lint",
        "tests",
        "ai_review",
    ]


def test_custom_profile_falls_back_to_the_repository_config() -> None:
    repo = parse_repo_config('[gates]\ntests = "pytest -q"\nlint = false\nbuild = true\n')
    assert gates_for("custom", "worker", None, repo) == ["tests", "build"]
    assert gates_for("custom", "worker", [], repo) == ["tests", "build"]
    assert gates_for("custom", "worker", ["lint"], repo) == ["lint"]


def test_custom_profile_with_no_gates_anywhere_is_empty() -> None:
    assert gates_for("custom", "worker", None, None) == []


def test_unknown_profile_and_agent_type_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="unknown gate profile 'paranoid'"):
        gates_for("paranoid", "worker", None, None)
    with pytest.raises(ValidationFailed, match="no default gate profile for agent type 'robot'"):
        resolve_profile(None, "robot")


def test_validate_gate_names_normalises_and_dedups() -> None:
    assert validate_gate_names([" Tests ", "tests", "AI-Review"]) == ["tests", "ai_review"]


def test_validate_gate_names_refuses_unknown_names_with_the_known_ones() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_gate_names(["tests", "security", "fuzz"])
    assert "'security'" in info.value.message and "'fuzz'" in info.value.message
    assert "known gates: typecheck, lint" in info.value.message
    assert info.value.details["unknown"] == ["security", "fuzz"]


def test_split_by_phase() -> None:
    assert split_by_phase(STRICT, "pre") == ["typecheck", "lint"]
    assert split_by_phase(STRICT, "post") == STRICT[2:]


def test_a_custom_config_file_changes_profiles(tmp_path: Path) -> None:
    path = tmp_path / "gates.toml"
    path.write_text(
        'default_timeout_s = 5\n[phases]\nlint = "pre"\ntests = "post"\n'
        '[profiles]\nfast = ["lint"]\ncustom = []\n[default_profile]\nworker = "fast"\n'
        "[thresholds]\ncoverage = 70\n"
    )
    cfg = load_gates_config(path)
    assert gates_for(None, "worker", None, None, config=cfg) == ["lint"]
    assert cfg.coverage_threshold() == 70
    with pytest.raises(ValidationFailed):
        validate_gate_names(["typecheck"], cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[phases\n", "not valid TOML"),
        (
            '[phases]\nlint = "sometime"\n[profiles]\ncustom = []\n[default_profile]\n',
            "phases.lint",
        ),
        (
            '[phases]\nlint = "pre"\n[profiles]\nx = ["nope"]\ncustom = []\n[default_profile]\n',
            "unknown gates",
        ),
        ('[phases]\nlint = "pre"\n[profiles]\nx = ["lint"]\n[default_profile]\n', "'custom'"),
        (
            '[phases]\nlint = "pre"\n[profiles]\ncustom = []\n[default_profile]\nworker = "y"\n',
            "unknown: 'y'",
        ),
        ('[phases]\nlint = "pre"\n[profiles]\ncustom = []\n[default_profile]\n[extra]\n', "extra"),
    ],
)
def test_invalid_config_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(GateConfigError, match="gate config") as info:
        load_gates_config(path)
    assert message in info.value.message


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GateConfigError, match="cannot read gate config"):
        load_gates_config(tmp_path / "absent.toml")
