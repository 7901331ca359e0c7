"""Which files a gate command runs (SPEC §17, gate integrity).

:func:`files_run_by` names the regular files of a tree (the agent's base commit) that a gate
command runs, so that ``core/gates/pinning.py`` can show the command their base version:

- the program of each simple command when it is a path (``./scripts/lint``, ``ci/test.sh``),
  after assignments (``FOO=1``) and wrappers (``env``, ``timeout 60``, ``uv run``, ...);
- the script an interpreter runs (``sh ci/test.sh``, ``bash -e x.sh``, ``python3 tools/check.py``,
  ``node x.js``, ``. ci/env.sh``), and, recursively, the command string of ``sh -c '...'``;
- the file read on standard input (``sh < ci/test.sh``);
- configuration named by ``--config``/``--config-file``/``--rcfile``, and ``-c`` of pytest and tox;
- ``make``: ``Makefile`` (``makefile``, ``GNUmakefile``; ``-f file``, ``-C dir``) and, one level
  down, what the recipes of the target (and its prerequisites) run;
- ``npm``/``yarn``/``pnpm``: ``package.json`` and what the named script (with its ``pre``/``post``
  scripts) runs; ``tox``: ``tox.ini``; ``nox``: ``noxfile.py``; ``just``: the justfile.

Files a command merely reads or checks (``pytest tests/test_x.py``, ``ruff check src/app.py``) are
the agent's change under test and keep the agent's version. Shell syntax is read the way
``shlex`` splits it (no expansion: a word holding ``$``, `` ` `` or ``*`` names no file).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterator

from core.gates.tree import SourceTree
from core.safeio import MiB, RefusedFile

_SCRIPT_MAX = MiB
_DEPTH = 3

_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"}
_INTERPRETERS = {"node", "nodejs", "perl", "ruby", "php", "bun", "tsx", "ts-node", "Rscript"}
_PYTHON = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$")
_PY_OPTS_WITH_VALUE = {"-W", "-X", "--check-hash-based-pycs"}
_WRAPPERS = {"env", "exec", "command", "builtin", "nice", "nohup", "time", "stdbuf", "xvfb-run"}
_WITH_ARG = {"timeout": 1, "chrt": 1, "taskset": 1}
_RUN_TOOLS = {"uv", "poetry", "pipenv", "hatch", "pdm", "rye", "conda", "pixi"}
_NODE_RUNNERS = {"npm", "yarn", "pnpm"}
_MAKE = {"make", "gmake"}
_MAKEFILES = ("GNUmakefile", "makefile", "Makefile")
_FILES_OF = {
    "tox": ("tox.ini",),
    "nox": ("noxfile.py",),
    "just": ("justfile", "Justfile", ".justfile"),
}
_CONFIG_OPTIONS = {"--config", "--config-file", "--rcfile"}
_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "|&", ";;", "{", "}", "!"}
_REDIRECTS = {">", ">>", "<", "<<", "<<<", ">&", "<&", "&>", "&>>", "<>", ">|"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def files_run_by(command: str, tree: SourceTree) -> list[str]:
    """Paths (relative, normalised) of the regular files of ``tree`` that ``command`` runs."""
    found: list[str] = []
    _scan(command, tree, found, 0)
    return found


def _tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: sh would refuse it too; look at the words anyway
        return command.split()


def _simple_commands(tokens: list[str]) -> Iterator[tuple[list[str], list[str]]]:
    """``(words, stdin files)`` of each simple command (split at operators, redirections out)."""
    words: list[str] = []
    stdin: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _REDIRECTS:
            if tok == "<" and i + 1 < len(tokens):
                stdin.append(tokens[i + 1])
            i += 2
            continue
        if tok in _SEPARATORS or tok == "\n":
            if words or stdin:
                yield words, stdin
            words, stdin = [], []
        else:
            words.append(tok)
        i += 1
    if words or stdin:
        yield words, stdin


def _scan(command: str, tree: SourceTree, found: list[str], depth: int) -> None:
    if depth > _DEPTH:
        return
    for words, stdin in _simple_commands(_tokens(command)):
        for name in stdin:
            _add(name, tree, found)
        _scan_simple(words, tree, found, depth)


def _strip_prefixes(words: list[str]) -> list[str]:
    """The words from the program on (assignments, wrappers and ``<tool> run`` dropped)."""
    i = 0
    while i < len(words):
        word = words[i]
        base = posixpath.basename(word)
        if _ASSIGNMENT.match(word):
            i += 1
        elif base in _WRAPPERS or base in _WITH_ARG:
            i += 1
            while i < len(words) and (words[i].startswith("-") or _ASSIGNMENT.match(words[i])):
                i += 1
            i += _WITH_ARG.get(base, 0)
        elif base in _RUN_TOOLS and i + 1 < len(words) and words[i + 1] in ("run", "exec"):
            i += 2
            while i < len(words) and words[i].startswith("-"):
                i += 1
        else:
            break
    return words[i:]


def _scan_simple(words: list[str], tree: SourceTree, found: list[str], depth: int) -> None:
    words = _strip_prefixes(words)
    if not words:
        return
    program, args = words[0], words[1:]
    name = posixpath.basename(program)
    if "/" in program:
        _add(program, tree, found)
    for i, arg in enumerate(args):
        option, eq, value = arg.partition("=")
        if option in _CONFIG_OPTIONS:
            _add(value if eq else _at(args, i + 1), tree, found)
    if name in _SHELLS or name in ("source", "."):
        _scan_shell(name, args, tree, found, depth)
    elif _PYTHON.match(name) or name in _INTERPRETERS:
        _add(_script_of(args, python=bool(_PYTHON.match(name))), tree, found)
    elif name in ("pytest", "py.test", "tox") and "-c" in args:
        _add(_at(args, args.index("-c") + 1), tree, found)
    if name in _MAKE:
        _scan_make(args, tree, found, depth)
    elif name in _NODE_RUNNERS:
        _scan_node(name, args, tree, found, depth)
    for file in _FILES_OF.get(name, ()):
        _add(file, tree, found)


def _at(args: list[str], i: int) -> str:
    return args[i] if 0 <= i < len(args) else ""


def _scan_shell(name: str, args: list[str], tree: SourceTree, found: list[str], depth: int) -> None:
    if name in ("source", "."):
        _add(_at(args, 0), tree, found)
        return
    i = 0
    while i < len(args) and args[i].startswith(("-", "+")):
        flag = args[i]
        if "c" in flag.lstrip("-+") and not flag.startswith("--"):
            _scan(_at(args, i + 1), tree, found, depth + 1)
            return
        i += 2 if flag in ("-o", "+o", "--rcfile", "--init-file") else 1
    _add(_at(args, i), tree, found)


def _script_of(args: list[str], *, python: bool) -> str:
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        flag = args[i]
        if python and flag in ("-m", "-c"):
            return ""  # a module or a code string, not a file
        i += 2 if python and flag in _PY_OPTS_WITH_VALUE else 1
    return _at(args, i)


def _scan_make(args: list[str], tree: SourceTree, found: list[str], depth: int) -> None:
    directory = ""
    files: list[str] = []
    targets: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-f", "--file", "--makefile"):
            files.append(_at(args, i + 1))
            i += 2
            continue
        if arg.startswith(("--file=", "--makefile=")):
            files.append(arg.partition("=")[2])
        elif arg in ("-C", "--directory"):
            directory = _at(args, i + 1)
            i += 2
            continue
        elif arg.startswith("--directory="):
            directory = arg.partition("=")[2]
        elif not arg.startswith("-") and not _ASSIGNMENT.match(arg):
            targets.append(arg)
        i += 1
    if not files:
        files = [posixpath.join(directory, n) if directory else n for n in _MAKEFILES]
    for file in files:
        path = _add(file, tree, found)
        if path is not None and depth < _DEPTH:
            text = _read_text(tree, path)
            for line in make_recipes(text, targets):
                _scan(line, tree, found, depth + 1)


def make_recipes(text: str, targets: list[str]) -> list[str]:
    """The recipe lines of ``targets`` (default: the first target) and their prerequisites."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    first: str | None = None
    current: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("\t"):
            for lines_of in current:
                lines_of.append(line.strip().lstrip("@-+"))
            continue
        match = re.match(r"^([^\s:=#][^:=#]*?)\s*::?(?!=)\s*([^;#]*)", line)
        if match is None:
            if line.strip() and not line.startswith("#"):
                current = []
            continue
        recipe: list[str] = []
        current = [recipe]
        deps = match.group(2).split()
        for target in match.group(1).split():
            if first is None and not target.startswith("."):
                first = target
            rules.setdefault(target, ([], recipe))[0].extend(deps)
    wanted = targets or ([first] if first else [])
    lines: list[str] = []
    seen: set[str] = set()
    while wanted and len(seen) < 50:
        target = wanted.pop(0)
        if target in seen or target not in rules:
            continue
        seen.add(target)
        deps, recipe = rules[target]
        wanted.extend(deps)
        lines.extend(recipe)
    return lines


def _scan_node(
    runner: str, args: list[str], tree: SourceTree, found: list[str], depth: int
) -> None:
    path = _add("package.json", tree, found)
    words = [a for a in args if not a.startswith("-")]
    if not words:
        return
    if words[0] in ("run", "run-script"):
        script = _at(words, 1)
    elif words[0] in ("test", "t", "tst", "start", "stop", "restart"):
        script = "test" if words[0] in ("t", "tst") else words[0]
    elif runner != "npm":
        script = words[0]  # yarn <script>, pnpm <script>
    else:
        return
    if path is None or not script or depth >= _DEPTH:
        return
    try:
        scripts = json.loads(_read_text(tree, path)).get("scripts", {})
    except (ValueError, AttributeError, RecursionError):
        return
    if not isinstance(scripts, dict):
        return
    for name in (f"pre{script}", script, f"post{script}"):
        body = scripts.get(name)
        if isinstance(body, str):
            _scan(body, tree, found, depth + 1)


def _read_text(tree: SourceTree, path: str) -> str:
    try:
        data = tree.read(path, _SCRIPT_MAX)
    except (RefusedFile, OSError):
        return ""
    return (data or b"").decode("utf-8", "replace")


def _normal(name: str) -> str | None:
    if not name or "$" in name or "`" in name or "*" in name:
        return None
    path = posixpath.normpath(name)
    if path.startswith(("/", "../")) or path in (".", ".."):
        return None
    return path


def _add(name: str, tree: SourceTree, found: list[str]) -> str | None:
    """Record ``name`` if it is a regular file of ``tree``; its normalised path, else None."""
    path = _normal(name)
    if path is None:
        return None
    try:
        entry = tree.entry(path)
    except RefusedFile:
        return None
    if entry is None or entry.kind != "file":
        return None
    if path not in found:
        found.append(path)
    return path
