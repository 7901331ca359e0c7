"""Conflict-check benchmark on a 10,000-file repository.

    /work/venv/bin/python bench/bench_conflicts.py [--files 10000] [--rounds 5]

Times ``core.git.check_conflicts`` (fetch + ``git merge-tree --write-tree``, no checkout touched)
for a clean merge and for a conflicting one, against the classic baseline measured in the same run:
a throw-away worktree of the agent's branch, ``git merge --no-commit``, then removal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.git import RepoCache, check_conflicts, commit_all, create_worktree
from core.git.runner import git

ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.org",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.org",
}


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def make_origin(root: Path, files: int) -> tuple[Path, Path]:
    bare, dev = root / "origin.git", root / "dev"
    sh("init", "-q", "--bare", str(bare), cwd=root)
    sh("init", "-q", str(dev), cwd=root)
    for i in range(files):
        d = dev / f"pkg{i % 100:02d}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i:05d}.py").write_text(
            f"# module {i}\n"
            + "".join(f"def f{j}(x):\n    return x + {i * j}\n" for j in range(10))
        )
    sh("add", "-A", cwd=dev)
    sh("commit", "-q", "-m", "10k files", cwd=dev)
    sh("remote", "add", "origin", str(bare), cwd=dev)
    sh("push", "-q", "origin", "main", cwd=dev)
    return bare, dev


def upstream_change(dev: Path, paths: list[str], tag: str) -> None:
    for p in paths:
        with open(dev / p, "a") as fh:
            fh.write(f"# upstream {tag}\n")
    sh("commit", "-q", "-am", f"upstream {tag}", cwd=dev)
    sh("push", "-q", "origin", "main", cwd=dev)


async def naive_check(cache: Path, branch: str, scratch: Path) -> list[str]:
    """The baseline: check out the branch in a temporary worktree and try a real merge."""
    await git("fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main", git_dir=cache)
    await git("worktree", "add", "-q", "--detach", str(scratch), branch, git_dir=cache)
    try:
        env = {
            "GIT_AUTHOR_NAME": "b",
            "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "b",
            "GIT_COMMITTER_EMAIL": "b@b",
        }
        try:
            await git(
                "merge",
                "--no-commit",
                "--no-ff",
                "-q",
                "refs/remotes/origin/main",
                cwd=scratch,
                env=env,
            )
            return []
        except Exception:
            out = await git("diff", "--name-only", "--diff-filter=U", cwd=scratch)
            return out.split()
    finally:
        await git("worktree", "remove", "--force", str(scratch), git_dir=cache)


async def timed(label: str, rounds: int, fn: object) -> float:
    times = []
    result = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = await fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"  {label:<38} median {median * 1000:8.1f} ms  -> {len(result or [])} conflicts")
    return median


async def run(files: int, rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-conflicts-"))
    try:
        start = time.perf_counter()
        bare, dev = make_origin(root, files)
        print(f"repository: {files} files, built in {time.perf_counter() - start:.1f} s")
        cache = await RepoCache(root / "cache").ensure(f"file://{bare}")
        wt = await create_worktree(cache, root / "wt", branch="mosaic/worker/B", base="main")
        agent_files = [f"pkg{i % 100:02d}/mod{i:05d}.py" for i in range(0, 40, 2)]
        for p in agent_files:
            with open(wt.path / p, "a") as fh:
                fh.write("# agent change\n")
        await commit_all(wt, "agent", trailers={}, author_name="a", author_email="a@b.c")

        upstream_change(dev, [f"pkg{i % 100:02d}/mod{i:05d}.py" for i in range(1, 40, 2)], "a")
        print("clean merge (20 agent files, 20 other upstream files):")
        ours = await timed(
            "check_conflicts (merge-tree)", rounds, lambda: check_conflicts(wt, "main")
        )
        base = await timed(
            "baseline (temp worktree + git merge)",
            rounds,
            lambda: naive_check(cache, wt.branch, root / "scratch"),
        )
        print(f"  ratio: baseline / check_conflicts = {base / ours:.1f}x")

        upstream_change(dev, agent_files[:5], "b")
        print("conflicting merge (5 files touched on both sides):")
        ours = await timed(
            "check_conflicts (merge-tree)", rounds, lambda: check_conflicts(wt, "main")
        )
        base = await timed(
            "baseline (temp worktree + git merge)",
            rounds,
            lambda: naive_check(cache, wt.branch, root / "scratch"),
        )
        print(f"  ratio: baseline / check_conflicts = {base / ours:.1f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.files, args.rounds))


if __name__ == "__main__":
    main()
