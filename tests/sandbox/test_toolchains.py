"""What of the operator's toolchains becomes visible in a sandbox, and what never does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sandbox.toolchains import path_directories, toolchain_binds


def test_a_venv_brings_itself_and_its_base_interpreter() -> None:
    venv_bin = Path(sys.executable).parent
    binds = toolchain_binds([venv_bin])
    assert any(venv_bin == b or b in venv_bin.parents for b in binds)
    base = Path(os.path.realpath(sys.executable))
    assert str(base).startswith("/usr/") or any(b in base.parents for b in binds)


def test_an_npm_cli_brings_its_node_modules(tmp_path: Path) -> None:
    package = tmp_path / "prefix" / "lib" / "node_modules" / "@x" / "cli"
    native = tmp_path / "prefix" / "lib" / "node_modules" / "@x" / "cli-linux-x64"
    package.mkdir(parents=True)
    native.mkdir(parents=True)
    (package / "cli.js").write_text("#!/usr/bin/env node\n")
    bin_dir = tmp_path / "prefix" / "bin"
    bin_dir.mkdir()
    (bin_dir / "cli").symlink_to(package / "cli.js")
    binds = toolchain_binds([bin_dir])
    assert binds == (bin_dir, tmp_path / "prefix" / "lib" / "node_modules")


def test_pyenv_shims_bring_the_pyenv_root(tmp_path: Path) -> None:
    root = tmp_path / ".pyenv"
    (root / "shims").mkdir(parents=True)
    (root / "libexec").mkdir()
    assert toolchain_binds([root / "shims"]) == (root,)


def test_system_relative_and_missing_directories_add_nothing(tmp_path: Path) -> None:
    assert toolchain_binds(["/usr/bin", "/bin", "relative/bin", "", str(tmp_path / "gone")]) == ()


def test_a_toolchain_holding_a_hidden_path_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    state = home / ".local" / "state" / "mosaic"
    state.mkdir(parents=True)
    tools = home / "tools" / "bin"
    tools.mkdir(parents=True)
    # the home itself on PATH would expose the state directory: refused; a bin below is fine
    assert toolchain_binds([home, tools], hidden=[state]) == (tools,)


def test_a_symlink_out_of_the_directory_brings_only_its_target_directory(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    elsewhere = tmp_path / "opt" / "tool"
    elsewhere.mkdir(parents=True)
    (elsewhere / "run").write_text("#!/bin/sh\n")
    (bin_dir / "run").symlink_to(elsewhere / "run")
    (bin_dir / "inside").symlink_to(bin_dir / "run")
    assert toolchain_binds([bin_dir]) == (bin_dir, elsewhere)


def test_path_directories_splits_a_path() -> None:
    assert path_directories("/a:/b::/c") == ["/a", "/b", "/c"]
    assert path_directories(None) == []
