"""The scan of the commits to be pushed: every added or changed blob (raw, whatever the repository's
attributes say), every new path, every commit message; too-large blobs block; old secrets that an
agent leaves untouched do not."""

from __future__ import annotations

import asyncio
import subprocess

import psutil
import pytest

from core.git import ScanError, scan_commits
from core.git.scan_cli import main as scan_cli
from core.git.secret_rules import B64, UPPER32, fake
from core.git.secrets import ScanReport, scan_range

from .conftest import ENV, Origin, sh

GH = "gh" + "p_" + fake(36, seed="c-gh")
AWS = "AK" + "IA" + fake(16, UPPER32, seed="c-aws")
STRIPE = "sk" + "_live_" + fake(24, seed="c-st")


def _pem(seed: str) -> str:
    body = "\n".join(fake(64, B64, seed=f"{seed}{i}") for i in range(5))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"


def _found(report: ScanReport) -> list[tuple[str, int, str]]:
    return [(f.path, f.line, f.rule) for f in report.findings]


async def _scan(origin: Origin, base: str, **kw: object) -> ScanReport:
    return await scan_range(origin.dev, f"{base}..main", **kw)  # type: ignore[arg-type]


def _write_bytes(origin: Origin, files: dict[str, bytes], message: str = "change") -> str:
    for name, content in files.items():
        target = origin.dev / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    sh("add", "-A", cwd=origin.dev)
    sh("commit", "-q", "-m", message, cwd=origin.dev)
    return sh("rev-parse", "HEAD", cwd=origin.dev).strip()


@pytest.mark.parametrize(
    "attributes", ["*.cfg -diff", "*.cfg binary", "* -text -diff", "*.cfg diff=hide"]
)
async def test_repository_attributes_do_not_hide_a_blob(origin: Origin, attributes: str) -> None:
    sh("config", "diff.hide.textconv", "true", cwd=origin.dev)  # a textconv that prints nothing
    base = origin.sha("main")
    origin.commit({".gitattributes": attributes + "\n", "deploy.cfg": f"token = {GH}\n"})
    assert GH not in sh("log", "-p", "-1", cwd=origin.dev)  # what a patch-based scan saw

    report = await _scan(origin, base)

    assert _found(report) == [("deploy.cfg", 1, "github-personal-access-token")]
    assert report.reason() == (
        "1 secret(s) found (github-personal-access-token) in deploy.cfg; push blocked"
    )


async def test_binary_blobs_are_scanned_through_their_strings(origin: Origin) -> None:
    base = origin.sha("main")
    _write_bytes(
        origin,
        {
            "keys.dat": b"\0" + f"aws_access_key_id = {AWS}\n".encode(),
            "img/logo.png": b"\x89PNG\r\n\x1a\n\0\0" + bytes(range(256)) + STRIPE.encode() + b"\0",
            "win.ini": f"[auth]\npassword = {AWS}\n".encode("utf-16"),
        },
    )

    report = await _scan(origin, base)

    assert sorted((f.path, f.rule, f.masked) for f in report.findings) == [
        ("img/logo.png", "stripe-secret-key", "sk_l****"),
        ("keys.dat", "aws-access-key-id", "AKIA****"),
        ("win.ini", "aws-access-key-id", "AKIA****"),
    ]


async def test_paths_are_scanned_and_shown_masked(origin: Origin) -> None:
    base = origin.sha("main")
    origin.commit({f"notes/{GH}.txt": "hello\n", "ok.txt": "fine\n"})
    sh("mv", "ok.txt", f"{AWS}", cwd=origin.dev)  # a rename counts as a new path
    sh("commit", "-qm", "rename", cwd=origin.dev)

    report = await _scan(origin, base)

    assert _found(report) == [
        ("notes/ghp_****.txt", 0, "github-personal-access-token"),
        ("AKIA****", 0, "aws-access-key-id"),
    ]
    assert GH not in report.reason() and AWS not in report.reason()


async def test_commit_messages_and_headers_are_scanned(origin: Origin) -> None:
    base = origin.sha("main")
    origin.commit({"a.txt": "a\n"}, f"fix login\n\ndebug token: {GH}\n")
    sh(
        "commit",
        "-q",
        "--allow-empty",
        f"--author=Dev {AWS} <dev@example.org>",
        "-m",
        "x",
        cwd=origin.dev,
    )
    subprocess.run(
        ["git", "-c", f"user.name=Dev {AWS}", "commit", "-q", "--allow-empty", "-m", "empty"],
        cwd=origin.dev,
        env={k: v for k, v in ENV.items() if k != "GIT_AUTHOR_NAME"},
        check=True,
    )

    report = await _scan(origin, base)

    assert _found(report) == [
        ("(commit message)", 3, "github-personal-access-token"),
        ("(commit header)", 3, "aws-access-key-id"),
        ("(commit header)", 3, "aws-access-key-id"),
    ]


async def test_texts_such_as_the_summary_are_scanned(origin: Origin) -> None:
    base = origin.sha("main")
    report = await _scan(origin, base, texts={"(summary)": f"all done\nused {STRIPE}"})
    assert _found(report) == [("(summary)", 2, "stripe-secret-key")]
    assert report.commits == 0


async def test_a_secret_already_in_the_base_and_untouched_does_not_block(origin: Origin) -> None:
    origin.commit({"settings.py": f"A = 1\nKEY = '{AWS}'\nB = 2\n", "keys/id_rsa": _pem("old")})
    base = origin.sha("main")
    # the agent edits other lines, moves the key within the file, renames the key file
    origin.commit({"settings.py": f"KEY = '{AWS}'\nA = 10\nB = 2\nC = 3\n"})
    sh("mv", "keys/id_rsa", "keys/deploy_rsa", cwd=origin.dev)
    sh("commit", "-qm", "rename", cwd=origin.dev)

    report = await _scan(origin, base)

    assert report.clean, _found(report)


async def test_a_base_secret_copied_elsewhere_or_a_rewritten_key_blocks(origin: Origin) -> None:
    origin.commit({"settings.py": f"KEY = '{AWS}'\n", "keys/id_rsa": _pem("old")})
    base = origin.sha("main")
    # the old scan saw only the added lines: a key body replaced in place had no BEGIN/END
    origin.commit({"tools/copy.sh": f"export KEY={AWS}\n", "keys/id_rsa": _pem("new")})

    report = await _scan(origin, base)

    assert _found(report) == [
        ("keys/id_rsa", 1, "private-key"),
        ("tools/copy.sh", 1, "aws-access-key-id"),
    ]


async def test_merges_and_history_count_not_only_the_final_tree(origin: Origin) -> None:
    base = origin.sha("main")
    origin.commit({"side.env": f"TOKEN={GH}\n"}, "side", branch="side")
    origin.commit({"side.env": "TOKEN=${TOKEN}\n"}, "cleaned", branch="side")
    sh("checkout", "-q", "main", cwd=origin.dev)
    origin.commit({"main.txt": "main\n"}, "main work")
    sh("merge", "-q", "--no-ff", "--no-commit", "side", cwd=origin.dev)
    (origin.dev / "evil.txt").write_text(f"{STRIPE}\n")  # only in the merge commit itself
    sh("add", "evil.txt", cwd=origin.dev)
    sh("commit", "-qm", "merge side", cwd=origin.dev)

    report = await _scan(origin, base)

    assert sorted(_found(report)) == [
        ("evil.txt", 1, "stripe-secret-key"),
        ("side.env", 1, "github-personal-access-token"),
    ]


async def test_symlink_targets_are_scanned(origin: Origin) -> None:
    base = origin.sha("main")
    (origin.dev / "link").symlink_to(f"/srv/{GH}")
    sh("add", "link", cwd=origin.dev)
    sh("commit", "-qm", "link", cwd=origin.dev)
    assert _found(await _scan(origin, base)) == [("link", 1, "github-personal-access-token")]


async def test_a_blob_over_the_limit_is_never_skipped(origin: Origin) -> None:
    base = origin.sha("main")
    _write_bytes(origin, {"data/dump.sql": b"-- dump\n" * 200_000, "ok.txt": b"fine\n"})

    report = await _scan(origin, base, max_blob_bytes=1 << 20)

    assert report.findings == [] and not report.clean
    [blob] = report.too_large
    assert (blob.path, blob.size) == ("data/dump.sql", 1_600_000)
    assert report.reason() == (
        "data/dump.sql is larger than 1 MB (1.5 MB; SCAN_MAX_FILE_MB), so it cannot be scanned; "
        "push blocked"
    )
    with pytest.raises(ScanError, match=r"data/dump.sql is larger than 1 MB"):
        await scan_commits(origin.dev, f"{base}..main", max_blob_bytes=1 << 20)
    assert (await _scan(origin, base, max_blob_bytes=2 << 20)).clean


def test_the_cli_reports_a_blob_too_large_and_exits_1(
    origin: Origin, capsys: pytest.CaptureFixture[str]
) -> None:
    base = origin.sha("main")
    sha = _write_bytes(origin, {"big.bin": b"\0" * 1_500_000})
    code = scan_cli(["--git", f"{base}..main", "--repo", str(origin.dev), "--max-file-mb", "1"])
    assert code == 1
    assert capsys.readouterr().out == (
        "big.bin is larger than 1 MB (1.4 MB; SCAN_MAX_FILE_MB), so it cannot be scanned "
        f"commit={sha[:12]}\n"
    )


async def test_a_cancelled_scan_stops_its_git_processes(origin: Origin) -> None:
    base = origin.sha("main")
    _write_bytes(origin, {f"f{i}.txt": (f"line {i} key\n" * 400_000).encode() for i in range(4)})
    me = psutil.Process()

    task = asyncio.create_task(_scan(origin, base, max_blob_bytes=64 << 20))
    await asyncio.sleep(0.3)
    assert any(p.name() == "git" for p in me.children(recursive=True))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not any(p.name() == "git" for p in me.children(recursive=True)):
            break
        await asyncio.sleep(0.05)
    assert not any(p.name() == "git" for p in me.children(recursive=True))
