"""A repository's .mosaic/gates.toml: parsing, validation, and reading it from a trusted commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.gates import GateConfigError, load_repo_config, parse_repo_config
from tests.gates.conftest import commit_all, git, make_python_repo


def test_parses_commands_threshold_timeout_and_switches() -> None:
    repo = parse_repo_config(
        'coverage_threshold = 80\ntimeout_s = 120\n[gates]\ntests = " pytest -q "\n'
        "lint = false\nai_review = true\n"
    )
    assert repo.command_for("tests") == "pytest -q"
    assert repo.command_for("lint") is None and repo.disabled("lint")
    assert repo.command_for("ai_review") is None and not repo.disabled("ai_review")
    assert repo.coverage_threshold == 80 and repo.timeout_s == 120
    assert repo.listed_gates() == ["tests", "ai_review"]


def test_threshold_may_sit_inside_the_gates_table() -> None:
    repo = parse_repo_config('[gates]\ncoverage = "make cov"\ncoverage_threshold = 90\n')
    assert repo.coverage_threshold == 90
    assert repo.listed_gates() == ["coverage"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[gates\n", "not valid TOML"),
        ('[gates]\nsecurity = "bandit -r ."\n', "unknown gate 'security'"),
        ('[gates]\ntests = "   "\n', "empty command"),
        ('[gates]\nai_review = "review.sh"\n', "ai_review takes true or false"),
        ("[gates]\ntests = 3\n", "gates.tests"),
        ("coverage_threshold = 120\n", "coverage_threshold"),
        ("timeout_s = 0\n", "timeout_s"),
        ("colour = 'blue'\n", "colour"),
        ("coverage_threshold = 80\n[gates]\ncoverage_threshold = 90\n", "set twice"),
    ],
)
def test_invalid_file_is_a_clear_gate_config_error(text: str, message: str) -> None:
    with pytest.raises(GateConfigError) as info:
        parse_repo_config(text)
    assert ".mosaic/gates.toml" in info.value.message
    assert message in info.value.message


def test_missing_file_means_no_config(tmp_path: Path) -> None:
    assert load_repo_config(tmp_path) is None


def test_reads_the_working_tree_file(tmp_path: Path) -> None:
    repo = make_python_repo(tmp_path / "r", gates_toml='[gates]\ntests = "true"\n')
    config = load_repo_config(repo)
    assert config is not None and config.command_for("tests") == "true"


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".mosaic").mkdir()
    (tmp_path / ".mosaic" / "gates.toml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(GateConfigError, match=r"cannot read \.mosaic/gates\.toml"):
        load_repo_config(tmp_path)


def test_at_a_commit_the_agents_edit_does_not_count(tmp_path: Path) -> None:
    repo = make_python_repo(tmp_path / "r", gates_toml='[gates]\ntests = "pytest -q"\n')
    base = _head(repo)
    # The agent rewrites the file so that its tests "pass".
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\ntests = "true"\n')
    commit_all(repo, "agent weakens gates")
    at_base = load_repo_config(repo, base)
    assert at_base is not None and at_base.command_for("tests") == "pytest -q"
    in_tree = load_repo_config(repo)
    assert in_tree is not None and in_tree.command_for("tests") == "true"


def test_at_a_commit_without_the_file_means_no_config(tmp_path: Path) -> None:
    repo = make_python_repo(tmp_path / "r")
    base = _head(repo)
    (repo / ".mosaic").mkdir()
    (repo / ".mosaic" / "gates.toml").write_text('[gates]\ntests = "true"\n')
    commit_all(repo, "agent adds config")
    assert load_repo_config(repo, base) is None


def test_invalid_file_at_a_commit_names_the_commit(tmp_path: Path) -> None:
    repo = make_python_repo(tmp_path / "r", gates_toml="[gates\n")
    base = _head(repo)
    with pytest.raises(GateConfigError, match=rf"gates.toml at {base[:12]} is not valid TOML"):
        load_repo_config(repo, base)


@pytest.mark.parametrize("ref", ["0" * 40, "--output=/tmp/x"])
def test_unknown_commit_is_a_clear_error(tmp_path: Path, ref: str) -> None:
    repo = make_python_repo(tmp_path / "r")
    with pytest.raises(GateConfigError, match="commit"):
        load_repo_config(repo, ref)


def _head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")
