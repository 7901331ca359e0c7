"""Real sample repositories and a real executor for the gate tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.gates import GateContext, SubprocessExecutor

VENV_BIN = Path(sys.executable).parent

PYPROJECT = """\
[project]
name = "sample"
version = "0.1.0"

[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[tool.setuptools]
packages = ["sample"]

[tool.pytest.ini_options]
pythonpath = ["."]

[tool.ruff]
line-length = 100

[tool.mypy]
files = ["sample"]
strict = true
"""

CALC = """\
def add(a: int, b: int) -> int:
    return a + b


def sub(a: int, b: int) -> int:
    return a - b
"""

TEST_CALC = """\
from sample.calc import add, sub


def test_add() -> None:
    assert add(2, 3) == 5


def test_sub() -> None:
    assert sub(5, 3) == 2
"""

# Forty statements no test runs: with them the package's coverage drops far below 85%.
UNCOVERED = "\n".join(
    [f"def f{i}(x: int) -> int:\n    y = x + {i}\n    return y\n" for i in range(20)]
)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def commit_all(repo: Path, message: str = "change") -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_python_repo(
    root: Path,
    *,
    failing_test: bool = False,
    lint_error: bool = False,
    low_coverage: bool = False,
    gates_toml: str | None = None,
) -> Path:
    """A small Python project under git: package ``sample``, its tests, ruff and mypy config."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "sample").mkdir()
    (root / "sample" / "__init__.py").write_text("")
    calc = CALC + ("\nimport os\n" if lint_error else "")
    (root / "sample" / "calc.py").write_text(calc)
    if low_coverage:
        (root / "sample" / "extra.py").write_text(UNCOVERED)
    (root / "tests").mkdir()
    test = TEST_CALC
    if failing_test:
        test += "\n\ndef test_broken() -> None:\n    assert add(1, 1) == 3\n"
    (root / "tests" / "test_calc.py").write_text(test)
    (root / ".gitignore").write_text(
        textwrap.dedent(
            """\
            __pycache__/
            .coverage
            *.egg-info/
            build/
            """
        )
    )
    if gates_toml is not None:
        (root / ".mosaic").mkdir()
        (root / ".mosaic" / "gates.toml").write_text(gates_toml)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    commit_all(root, "initial")
    return root


@pytest.fixture(scope="session")
def tool_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment with the venv's tools first on PATH and shared tool caches (faster mypy)."""
    caches = tmp_path_factory.mktemp("caches")
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MYPY_CACHE_DIR"] = str(caches / "mypy")
    env["RUFF_CACHE_DIR"] = str(caches / "ruff")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("COVERAGE_PROCESS_START", None)
    for key in [k for k in env if k.startswith(("PYTEST_", "COV_CORE"))]:
        env.pop(key)
    return env


@pytest.fixture
def executor(tool_env: dict[str, str]) -> SubprocessExecutor:
    return SubprocessExecutor(env=tool_env)


@dataclass
class Recorder:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def types(self) -> list[str]:
        return [e for e, _ in self.events]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_ctx(executor: SubprocessExecutor, recorder: Recorder) -> Iterator[Any]:
    def build(worktree: Path, profile: str = "standard", **kw: Any) -> GateContext:
        kw.setdefault("agent_type", "worker")
        kw.setdefault("executor", executor)
        kw.setdefault("emit", recorder)
        return GateContext(
            agent_id="agent-1", task_id="task-1", profile=profile, worktree=worktree, **kw
        )

    yield build
