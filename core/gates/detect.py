"""Gate commands detected from a repository's build files, when ``.mosaic/gates.toml`` names none.

Rules (first match wins: Python, then Node, then Makefile):

- typecheck: ``mypy`` if configured ([tool.mypy], mypy.ini, setup.cfg [mypy]) or on PATH;
  npm scripts typecheck / type-check / tsc; make typecheck.
- lint: ``ruff check .`` if configured ([tool.ruff], ruff.toml) or on PATH; npm lint; make lint.
- tests: ``pytest -q`` if Python test files exist; ``npm test`` (not npm's placeholder);
  make test.
- coverage: ``pytest -q --cov=<src or packages> --cov-report=term`` if Python test files exist;
  npm scripts coverage / test:coverage / test:cov; make coverage.
- build: ``pip wheel`` into a temporary directory if pyproject.toml has [build-system];
  npm build; make build.
- integration: ``pytest -q tests/integration`` if that directory exists; npm scripts
  test:integration / integration / test:e2e / e2e; make integration.

Tools are looked up on the PATH of the gate executor (inside the sandbox when there is one) by
one probe command. A tool that is configured but missing is an error; a gate with nothing to
run is skipped with the reason.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.gates.tree import SourceTree, WorktreeTree, is_dir, is_file
from core.safeio import MiB, RefusedFile

PROBE_TOOLS = ("ruff", "mypy", "pytest", "npm", "make", "python3")
PROBE_COMMAND = (
    f'for t in {" ".join(PROBE_TOOLS)}; do command -v "$t" >/dev/null 2>&1 && echo "tool:$t"; '
    "done; true"
)
_NPM_PLACEHOLDER = "no test specified"
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", "build", "dist", ".tox"}
_WALK_LIMIT = 20_000
BUILD_FILE_MAX = MiB
"""A build file larger than this is not read (it counts as absent, with the reason)."""

_NODE_SCRIPTS: dict[str, tuple[str, ...]] = {
    "typecheck": ("typecheck", "type-check", "tsc"),
    "lint": ("lint",),
    "tests": ("test",),
    "coverage": ("coverage", "test:coverage", "test:cov"),
    "build": ("build",),
    "integration": ("test:integration", "integration", "test:e2e", "e2e"),
}
_MAKE_TARGETS = {
    "typecheck": "typecheck",
    "lint": "lint",
    "tests": "test",
    "coverage": "coverage",
    "build": "build",
    "integration": "integration",
}


@dataclass(frozen=True)
class GatePlan:
    """What to do for one gate: run ``command``, or report skipped/error with the reason."""

    gate: str
    command: str | None = None
    skip_reason: str | None = None
    error_reason: str | None = None
    source: str = ""


@dataclass
class ProjectFacts:
    """What the build files say (read once per run, off the event loop)."""

    python: bool = False
    pyproject: dict[str, Any] = field(default_factory=dict)
    ruff_config: str | None = None
    mypy_config: str | None = None
    mypy_has_files: bool = False
    python_tests: bool = False
    integration_dir: bool = False
    cov_targets: list[str] = field(default_factory=list)
    coverage_source_configured: bool = False
    node_scripts: dict[str, str] | None = None
    make_targets: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    @property
    def any_project(self) -> bool:
        return self.python or self.node_scripts is not None or bool(self.make_targets)


def parse_probe(output: str) -> set[str]:
    return {line[5:].strip() for line in output.splitlines() if line.startswith("tool:")}


def scan_project(root: Path | SourceTree) -> ProjectFacts:
    """Read the build files of ``root`` (blocking: run it in a thread).

    ``root`` is a directory (the agent's worktree: read through :mod:`core.safeio`) or a
    :class:`~core.gates.tree.SourceTree`, such as the agent's base commit. Build files are read
    without following a symbolic link, regular files only, at most ``BUILD_FILE_MAX`` bytes; a
    file refused for any of these reasons counts as absent, and the reason is kept in
    ``problems``. A tree that cannot be read at all raises :class:`~core.gates.tree.TreeError`.
    """
    tree: SourceTree = WorktreeTree(root) if isinstance(root, Path) else root
    facts = ProjectFacts()
    facts.python = any(is_file(tree, n) for n in ("pyproject.toml", "setup.cfg", "setup.py"))
    text = _read(tree, "pyproject.toml", facts)
    if text is not None:
        try:
            facts.pyproject = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            facts.problems.append(f"pyproject.toml unreadable: {_brief(exc)}")
    tool = facts.pyproject.get("tool", {}) if isinstance(facts.pyproject.get("tool"), dict) else {}
    cfg_text = _read(tree, "setup.cfg", facts)
    if "ruff" in tool:
        facts.ruff_config = "pyproject.toml [tool.ruff]"
    elif is_file(tree, "ruff.toml") or is_file(tree, ".ruff.toml"):
        facts.ruff_config = "ruff.toml"
    mypy_tool = tool.get("mypy")
    if isinstance(mypy_tool, dict):
        facts.mypy_config = "pyproject.toml [tool.mypy]"
        facts.mypy_has_files = bool(mypy_tool.get("files"))
    else:
        for name in ("mypy.ini", ".mypy.ini"):
            text = _read(tree, name, facts)
            if text is not None:
                facts.mypy_config = name
                facts.mypy_has_files = re.search(r"(?m)^\s*files\s*=", text) is not None
                break
        if facts.mypy_config is None and cfg_text and re.search(r"(?m)^\[mypy\]", cfg_text):
            facts.mypy_config = "setup.cfg [mypy]"
    if facts.python:
        facts.python_tests = _has_python_tests(tree)
        facts.integration_dir = is_dir(tree, "tests") and is_dir(tree, "tests/integration")
        cov = tool.get("coverage", {})
        run = cov.get("run", {}) if isinstance(cov, dict) else {}
        facts.coverage_source_configured = isinstance(run, dict) and bool(run.get("source"))
        facts.cov_targets = _cov_targets(tree)
    text = _read(tree, "package.json", facts)
    if text is not None:
        try:
            data = json.loads(text)
            scripts = data.get("scripts", {}) if isinstance(data, dict) else {}
            facts.node_scripts = {
                k: v for k, v in scripts.items() if isinstance(k, str) and isinstance(v, str)
            }
        except (ValueError, AttributeError, RecursionError) as exc:
            facts.problems.append(f"package.json unreadable: {_brief(exc)}")
            facts.node_scripts = {}
    makefile = _read(tree, "Makefile", facts) or _read(tree, "makefile", facts) or ""
    facts.make_targets = set(re.findall(r"(?m)^([A-Za-z][\w.-]*)\s*:(?!=)", makefile))
    return facts


def _brief(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]


def _read(tree: SourceTree, name: str, facts: ProjectFacts) -> str | None:
    """The text of build file ``name`` (None if absent; if refused, also the reason)."""
    try:
        data = tree.read(name, BUILD_FILE_MAX)
    except RefusedFile as exc:
        facts.problems.append(f"{name} ignored: {exc.why}")
        return None
    except OSError as exc:
        facts.problems.append(f"{name} unreadable: {exc.strerror or exc}")
        return None
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        facts.problems.append(f"{name} ignored: not UTF-8 ({exc.reason} at byte {exc.start})")
        return None


def _has_python_tests(tree: SourceTree) -> bool:
    seen = 0
    for _dirpath, dirnames, filenames in tree.walk():
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")):
                return True
        seen += len(filenames) + len(dirnames)
        if seen > _WALK_LIMIT:
            return False
    return False


def _cov_targets(tree: SourceTree) -> list[str]:
    if is_dir(tree, "src"):
        return ["src"]
    targets = []
    for name, found in tree.list_dir("").items():
        if name.startswith((".", "test")) or name in _SKIP_DIRS:
            continue
        if found.kind == "dir":
            if is_file(tree, f"{name}/__init__.py"):
                targets.append(name)
        elif name.endswith(".py") and name not in ("setup.py", "conftest.py"):
            targets.append(name[:-3])
    return sorted(targets)


def plan_detected(gate: str, facts: ProjectFacts, tools: set[str]) -> GatePlan:
    """The detected command for ``gate`` (or why there is none)."""
    for rule in (_python_plan, _node_plan, _make_plan):
        plan = rule(gate, facts, tools)
        if plan is not None:
            return plan
    why = "; ".join(facts.problems) if facts.problems else ""
    where = "no build files found" if not facts.any_project else f"no {gate} command detected"
    return GatePlan(
        gate,
        skip_reason=f"nothing to run: {where}{f' ({why})' if why else ''}; "
        f"set [gates] {gate} in .mosaic/gates.toml",
        source="detection",
    )


def _needs(tool: str, tools: set[str], gate: str, why: str, command: str, src: str) -> GatePlan:
    if tool in tools:
        return GatePlan(gate, command=command, source=src)
    return GatePlan(gate, error_reason=f"{why}, but {tool} is not on PATH", source=src)


def _python_plan(gate: str, facts: ProjectFacts, tools: set[str]) -> GatePlan | None:
    if not facts.python:
        return None
    src = "detected: python"
    if gate == "lint" and (facts.ruff_config or "ruff" in tools):
        why = f"ruff is configured ({facts.ruff_config})"
        return _needs("ruff", tools, gate, why, "ruff check .", src)
    if gate == "typecheck" and (facts.mypy_config or "mypy" in tools):
        command = "mypy" if facts.mypy_has_files else "mypy ."
        return _needs(
            "mypy", tools, gate, f"mypy is configured ({facts.mypy_config})", command, src
        )
    if gate == "tests" and facts.python_tests:
        return _needs("pytest", tools, gate, "Python tests exist", "pytest -q", src)
    if gate == "coverage" and facts.python_tests:
        if facts.coverage_source_configured or not facts.cov_targets:
            cov = "--cov" if facts.coverage_source_configured else "--cov=."
        else:
            cov = " ".join(f"--cov={t}" for t in facts.cov_targets)
        command = f"pytest -q {cov} --cov-report=term"
        return _needs("pytest", tools, gate, "Python tests exist", command, src)
    if gate == "integration" and facts.integration_dir:
        command = "pytest -q tests/integration"
        return _needs("pytest", tools, gate, "tests/integration exists", command, src)
    if gate == "build" and "build-system" in facts.pyproject:
        command = (
            "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && "
            'python3 -m pip wheel -q --no-deps --no-build-isolation --wheel-dir "$d" .'
        )
        return _needs("python3", tools, gate, "pyproject.toml has [build-system]", command, src)
    return None


def _node_plan(gate: str, facts: ProjectFacts, tools: set[str]) -> GatePlan | None:
    scripts = facts.node_scripts or {}
    for name in _NODE_SCRIPTS.get(gate, ()):
        body = scripts.get(name)
        if body is None or (name == "test" and _NPM_PLACEHOLDER in body):
            continue
        command = "npm test" if name == "test" else f"npm run {name}"
        why = f"package.json has a {name!r} script"
        return _needs("npm", tools, gate, why, command, "detected: package.json")
    return None


def _make_plan(gate: str, facts: ProjectFacts, tools: set[str]) -> GatePlan | None:
    target = _MAKE_TARGETS.get(gate)
    if target is None or target not in facts.make_targets:
        return None
    why = f"the Makefile has a {target!r} target"
    return _needs("make", tools, gate, why, f"make {target}", "detected: Makefile")
