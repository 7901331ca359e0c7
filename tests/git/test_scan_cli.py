"""``mosaic-orchestrator scan``: one line per finding, --json, exit 1 found / 0 clean / 2 usage."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.git.scan_cli import main
from core.git.secret_rules import fake

from .conftest import Origin

GH = "gh" + "p_" + fake(36, seed="cli-gh")
STRIPE = "sk" + "_live_" + fake(24, seed="cli-st")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "clean.py").write_text("print('hello')\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "settings.py").write_text(f"x = 1\nSTRIPE = '{STRIPE}'\n")
    return tmp_path


def test_findings_print_one_line_each_and_exit_1(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tree)]) == 1
    out, err = capsys.readouterr()
    assert out == f"{tree}/app/settings.py:2 stripe-secret-key sk_l****\n"
    assert STRIPE not in out + err


def test_clean_input_exits_0(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tree / "clean.py")]) == 0
    assert capsys.readouterr().out == ""


def test_json_output(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", str(tree)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 1
    assert data["findings"] == [
        {
            "path": f"{tree}/app/settings.py",
            "line": 2,
            "rule": "stripe-secret-key",
            "masked": "sk_l****",
            "commit": None,
        }
    ]


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"hello\nexport GH={GH}\n"))
    assert main(["-"]) == 1
    assert capsys.readouterr().out == "-:2 github-personal-access-token ghp_****\n"


def test_git_range(origin: Origin, capsys: pytest.CaptureFixture[str]) -> None:
    base = origin.sha("main")
    origin.commit({"ci.yml": f"token: {GH}\n"}, "ci")
    sha = origin.sha("main")
    assert main(["--git", f"{base}..main", "--repo", str(origin.dev)]) == 1
    assert capsys.readouterr().out == (
        f"ci.yml:1 github-personal-access-token ghp_**** commit={sha[:12]}\n"
    )
    assert main(["--git", "main..main", "--repo", str(origin.dev)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to scan"),
        (["/definitely/missing"], "/definitely/missing: no such file or directory"),
        (["--bogus"], "unrecognized arguments"),
        (["--repo", "/tmp", "x"], "--repo needs --git"),
        (["--git", "HEAD", "--repo", "/definitely/missing"], "no such directory"),
        (["--git", "--output=x", "--repo", "."], "error"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_git_range_is_a_usage_error(origin: Origin, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--git", "nope..main", "--repo", str(origin.dev)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mosaic-orchestrator scan: error: cannot read commits")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--git RANGE" in capsys.readouterr().out


def test_runs_as_a_module(tree: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-m", "core.git.scan_cli", "--json", str(tree)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["findings"][0]["rule"] == "stripe-secret-key"
    clean = subprocess.run(
        [sys.executable, "-m", "core.git.scan_cli", str(tree / "clean.py")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert (clean.returncode, clean.stdout) == (0, "")
    usage = subprocess.run(
        [sys.executable, "-m", "core.git.scan_cli"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
