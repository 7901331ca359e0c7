"""The scanner blocks secrets in text, files and every commit to be pushed; it never leaks them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from core.git import RepoCache, ScanError, commit_all, create_worktree, scan_commits, scan_paths
from core.git.secret_rules import B64, URLSAFE, fake
from core.git.secrets import scan_text

from .conftest import Origin, sh

# built at runtime so this file holds no realistic-looking secret
GH = "gh" + "p_" + fake(36, seed="t-gh")
AWS = "AK" + "IA" + fake(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", seed="t-aws")
ANT = "sk-" + "ant-api03-" + fake(93, URLSAFE, seed="t-ant") + "AA"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(fake(64, B64, seed=f"t-pem{i}") for i in range(5))
    + "\n-----END RSA PRIVATE KEY-----\n"
)


def test_finding_reports_path_line_rule_and_masked_value() -> None:
    text = f"first line\nsecond\ntoken: {GH}\n"
    [finding] = scan_text(text, "config/app.yaml")
    assert (finding.path, finding.line, finding.rule) == (
        "config/app.yaml",
        3,
        "github-personal-access-token",
    )
    assert finding.masked == "ghp_****" and GH not in repr(finding)
    assert finding.commit is None


def test_several_secrets_on_several_lines_in_order() -> None:
    text = f"a = '{AWS}'\n\nkey = {ANT}\n" + PEM
    found = [(f.line, f.rule) for f in scan_text(text, "mixed.txt")]
    assert found == [(1, "aws-access-key-id"), (3, "anthropic-api-key"), (4, "private-key")]


@pytest.mark.parametrize(
    "comment",
    [
        "# gitleaks:allow",
        "# pragma: allowlist secret",
        "// nosec",
        "# noqa",
        "/* detect-secrets: ignore */",
        "# trufflehog:ignore",
    ],
)
def test_inline_allow_comments_do_not_whitelist(comment: str) -> None:
    findings = scan_text(f'aws_key = "{AWS}"  {comment}\n', "settings.py")
    assert [f.rule for f in findings] == ["aws-access-key-id"]


def test_usual_false_positives_are_quiet() -> None:
    sha = fake(40, "0123456789abcdef", seed="sha")
    text = "\n".join(
        [
            f"commit {sha}",
            f"image: python@sha256:{fake(64, '0123456789abcdef', seed='dig')}",
            "id = '123e4567-e89b-12d3-a456-426614174000'",
            f'"integrity": "sha512-{fake(86, B64, seed="lock")}=="',
            'token = os.environ["GITHUB_TOKEN"]',
            "password: ${DB_PASSWORD}",
            "const key = process.env.API_KEY;",
            "api_key = 'AKIA" + "IOSFODNN7EXAMPLE'",
            'secret = "<token>"',
            "password = 'xxx'",
            "password = 'changeme'",
        ]
    )
    assert scan_text(text, "README.md") == []
    assert scan_text("", "empty") == []


def test_masks_and_logs_never_contain_the_value(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = [GH, AWS, ANT]
    findings = scan_text("\n".join(f"value = '{s}'" for s in secrets), "x.txt")
    assert len(findings) == 3
    for finding, secret in zip(findings, secrets, strict=True):
        assert secret not in finding.masked and secret[4:] not in repr(finding)
    for record in caplog.records:
        assert all(s not in record.getMessage() and s not in str(record.__dict__) for s in secrets)


async def test_scan_paths_walks_directories_reads_binaries_and_skips_git_and_huge_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(f"TOKEN = '{GH}'\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id_rsa").write_text(PEM)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text(f"token = {GH}\n")
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" + GH.encode())  # read through its strings
    (tmp_path / "huge.txt").write_text(("x" * 1000 + "\n") * 2 + GH)
    (tmp_path / "link.txt").symlink_to(tmp_path / "src" / "app.py")

    findings = await scan_paths([tmp_path], max_bytes=1500)

    assert sorted((Path(f.path).relative_to(tmp_path).as_posix(), f.rule) for f in findings) == [
        ("blob.bin", "github-personal-access-token"),
        ("keys/id_rsa", "private-key"),
        ("src/app.py", "github-personal-access-token"),
    ]
    [app] = await scan_paths([tmp_path / "src" / "app.py"])
    assert (app.line, app.rule) == (1, "github-personal-access-token")
    assert "file too large to scan" in caplog.text
    with pytest.raises(ScanError, match="no such file"):
        await scan_paths([tmp_path / "missing"])
    for record in caplog.records:
        assert GH not in str(record.__dict__)


async def test_scan_commits_finds_a_secret_added_then_removed(
    origin: Origin, tmp_path: Path
) -> None:
    base = origin.sha("main")
    origin.commit({"config.py": f"API = '{GH}'\n"}, "add config")
    leaked = origin.sha("main")
    origin.commit({"config.py": "API = os.environ['API']\n"}, "oops, remove it")
    head_tree = sh("show", "main:config.py", cwd=origin.bare)
    assert GH not in head_tree  # the final tree is clean...

    findings = await scan_commits(origin.dev, f"{base}..main")

    assert [(f.path, f.line, f.rule, f.commit) for f in findings] == [  # ...the history is not
        ("config.py", 1, "github-personal-access-token", leaked)
    ]


async def test_scan_commits_reports_new_file_line_numbers_per_commit(
    origin: Origin, tmp_path: Path
) -> None:
    base = origin.sha("main")
    lines = [f"line {i}" for i in range(1, 21)]
    origin.commit({"docs/notes.md": "\n".join(lines) + "\n"}, "notes")
    lines[9] = f"aws = {AWS}"
    lines.insert(15, "inserted")
    origin.commit({"docs/notes.md": "\n".join(lines) + "\n", "é t.txt": f"k={ANT}\n"}, "edit")
    second = origin.sha("main")

    findings = await scan_commits(origin.dev, f"{base}..main")

    assert sorted((f.path, f.line, f.rule, f.commit) for f in findings) == [
        ("docs/notes.md", 10, "aws-access-key-id", second),
        ("é t.txt", 1, "anthropic-api-key", second),
    ]
    assert await scan_commits(origin.dev, "main..main") == []


async def test_scan_commits_of_an_untrusted_worktree(origin: Origin, tmp_path: Path) -> None:
    cache = await RepoCache(tmp_path / "cache").ensure(origin.url)
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/S", base="main")
    (wt.path / "leak.env").write_text(f"GITHUB_TOKEN={GH}\n")
    await commit_all(wt, "work", trailers={}, author_name="A", author_email="a@b.c")
    # the agent points its .git file at a clean decoy repository
    decoy = tmp_path / "decoy"
    sh("init", "-q", str(decoy))
    (wt.path / ".git").write_text(f"gitdir: {decoy / '.git'}\n")

    findings = await scan_commits(wt, f"{wt.base_sha}..HEAD")

    assert [(f.path, f.rule) for f in findings] == [("leak.env", "github-personal-access-token")]


@pytest.mark.parametrize("bad", ["", "--output=/tmp/x", "a b", "nope..main"])
async def test_scan_commits_rejects_bad_ranges(origin: Origin, bad: str) -> None:
    with pytest.raises(ScanError):
        await scan_commits(origin.dev, bad)
