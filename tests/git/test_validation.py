"""Repository locations and branch names from API requests are validated before any git call."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from core.errors import ValidationFailed
from core.git import InvalidBranch, InvalidRepository, validate_branch, validate_repository

from .conftest import sh


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("https://GitHub.COM/org/repo/", "https://github.com/org/repo"),
        ("HTTP://host.example:8080/x", "http://host.example:8080/x"),
        ("ssh://git@host.example:2222/org/repo.git", "ssh://git@host.example:2222/org/repo.git"),
        ("git://host.example/repo", "git://host.example/repo"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("Host.Example:path/to/repo", "host.example:path/to/repo"),
        ("file:///does/not/exist/yet.git", "file:///does/not/exist/yet.git"),
        ("file://localhost/srv/repo.git/", "file:///srv/repo.git"),
        ("https://[::1]:8443/repo", "https://[::1]:8443/repo"),
    ],
)
def test_accepted_locations_are_normalised(given: str, expected: str) -> None:
    assert validate_repository(given) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("--upload-pack=touch /tmp/pwned", "'-'"),
        ("-oProxyCommand=evil", "'-'"),
        ("ext::sh -c touch% /tmp/pwned", "remote-helper"),
        ("fd::17", "remote-helper"),
        ("foo::bar", "remote-helper"),
        ("ftp://host/repo", "not allowed"),
        ("javascript://x/y", "not allowed"),
        ("ssh://-oProxyCommand=x/repo", "host"),
        ("ssh://-user@host/repo", "'-'"),
        ("https:///no-host", "host"),
        ("https://host.example", "no repository path"),
        ("https://host.example/repo#frag", "fragment"),
        ("https://host.example/a b", "whitespace"),
        ("https://host.example:99999/r", "port"),
        ("https://host.example/repo\n--upload-pack=x", "control"),
        ("file://remotehost/repo", "local absolute"),
        ("relative/path", "expected"),
        ("./repo", "expected"),
        ("git@host:-oProxyCommand=x", "option"),
        ("-@host:path", "'-'"),
        (" https://host.example/r", "whitespace"),
        ("x" * 3000, "longer"),
    ],
)
def test_dangerous_or_malformed_locations_are_refused(given: str, why: str) -> None:
    with pytest.raises(InvalidRepository) as info:
        validate_repository(given)
    assert why in info.value.message
    assert isinstance(info.value, ValidationFailed)


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidRepository):
        validate_repository(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidBranch):
        validate_branch(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given",
    [
        "https://user:s3cretpassw0rd@host.example",
        # long enough to be shortened in the message: the '@' must not be cut off the token
        "https://deploy:s3cretpassw0rd" + "x" * 100 + "@host.example",
        # malformed userinfo ('/', '?' or '#' in the token) is hidden too
        "https://deploy:s3cretpass/w0rd@host.example/repo",
        "https://deploy:s3cretpass?w0rd@host.example/repo",
        "https://deploy:s3cretpass#w0rd@host.example/repo",
        "https://deploy:s3cretpassw0rd%0a@host.example/repo",
        "ssh://git:s3cretpassw0rd@host.example/repo",
    ],
)
def test_error_messages_hide_url_credentials(given: str) -> None:
    with pytest.raises(InvalidRepository) as info:
        validate_repository(given)
    assert "s3cretpass" not in info.value.message
    assert "***@" in info.value.message


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("ssh://git:pw@host.example/repo", "password in a ssh:// URL"),
        ("git://user:pw@host.example/repo", "password in a git:// URL"),
        ("https://deploy:tok%0aen@host.example/repo", "control characters"),
        ("https://deploy%00:token@host.example/repo", "control characters"),
    ],
)
def test_passwords_only_in_http_urls_and_printable(given: str, why: str) -> None:
    with pytest.raises(InvalidRepository, match=why):
        validate_repository(given)


def test_http_credentials_survive_validation_for_the_cache_to_split() -> None:
    given = "https://deploy:T0ken%2Fx@Host.Example:8443/org/repo.git/"
    assert validate_repository(given) == "https://deploy:T0ken%2Fx@host.example:8443/org/repo.git"


def test_local_paths_must_be_existing_git_repositories(tmp_path: Path) -> None:
    work = tmp_path / "work"
    sh("init", "-q", str(work))
    bare = tmp_path / "bare.git"
    sh("init", "-q", "--bare", str(bare))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert validate_repository(str(work) + "/") == str(work)
    assert validate_repository(str(bare)) == str(bare)
    assert validate_repository(f"{tmp_path}/x/../work") == str(work)
    with pytest.raises(InvalidRepository, match="not a git repository"):
        validate_repository(str(plain))
    with pytest.raises(InvalidRepository, match="no such directory"):
        validate_repository(str(tmp_path / "missing"))


VALID_BRANCHES = ["main", "mosaic/worker/T-1", "feature/x.y", "a-b_c", "v1.2.3", "rel@2", "ünïcode"]
INVALID_BRANCHES = [
    "",
    "-main",
    "@",
    "HEAD",
    "a..b",
    "a b",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "a\\b",
    "/a",
    "a/",
    "a//b",
    "a.",
    ".hidden",
    "x/.hidden",
    "a.lock",
    "a.lock/b",
    "a@{1}",
    "tab\tname",
    "del\x7f",
    "x" * 256,
]


@pytest.mark.parametrize("name", VALID_BRANCHES)
def test_valid_branch_names(name: str) -> None:
    assert validate_branch(name) == name


@pytest.mark.parametrize("name", INVALID_BRANCHES)
def test_invalid_branch_names(name: str) -> None:
    with pytest.raises(InvalidBranch):
        validate_branch(name)


@pytest.mark.parametrize("name", VALID_BRANCHES + INVALID_BRANCHES[:-1])
def test_branch_rules_agree_with_git(name: str) -> None:
    done = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
    )
    ours = True
    try:
        validate_branch(name)
    except InvalidBranch:
        ours = False
    git_ok = done.returncode == 0 and name not in ("HEAD", "@")  # git expands these
    assert ours == git_ok
