"""Credentials in a repository URL: used by the host's git per command, never stored or shown.

Against a real smart-HTTP origin on loopback that answers 401 unless the right user and token
come (``git http-backend`` behind basic auth, see :mod:`tests.git.http_origin`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.git import (
    CloneFailed,
    Credentials,
    FetchFailed,
    PushRejected,
    RepoCache,
    check_conflicts,
    commit_all,
    create_worktree,
    push,
    repository_credentials,
    split_credentials,
)
from core.git.cache import cache_name
from core.git.credentials import helper_config
from core.git.runner import git_argv, run_git

from .conftest import Origin, sh
from .http_origin import HttpOrigin, serve_origin

AUTHOR = {"author_name": "Mosaic Agent", "author_email": "agent@mosaic.invalid"}


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_hex(16)


@pytest.fixture
def served(origin: Origin, token: str) -> Iterator[HttpOrigin]:
    with serve_origin(origin.bare, user="deploy", token=token) as http:
        yield http


def files_holding(root: Path, needle: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if not path.is_symlink() and needle.encode() in path.read_bytes():
                found.append(path)
    return found


# --- splitting a URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "clean", "user", "password"),
    [
        (
            "https://deploy:T0KEN@host.example/r.git",
            "https://host.example/r.git",
            "deploy",
            "T0KEN",
        ),
        ("http://u:p%40ss%3Aw@127.0.0.1:8080/r", "http://127.0.0.1:8080/r", "u", "p@ss:w"),
        ("https://ghp_T0KEN@github.com/o/r", "https://github.com/o/r", "ghp_T0KEN", ""),
        ("https://a:b:c@[::1]:8443/r", "https://[::1]:8443/r", "a", "b:c"),
    ],
)
def test_http_userinfo_is_split_off_and_decoded(
    url: str, clean: str, user: str, password: str
) -> None:
    stripped, creds = split_credentials(url)
    assert stripped == clean
    assert creds is not None
    assert (creds.username, creds.password) == (user, password)
    assert clean.startswith(f"{creds.protocol}://{creds.host}/")


@pytest.mark.parametrize(
    "url",
    [
        "https://host.example/r.git",
        "ssh://git@host.example/r.git",  # an ssh user name is not a secret
        "git@host.example:org/r.git",
        "file:///srv/r.git",
        "/srv/r.git",
    ],
)
def test_locations_without_http_credentials_are_unchanged(url: str) -> None:
    assert split_credentials(url) == (url, None)


def test_credentials_never_show_themselves() -> None:
    creds = repository_credentials("https://deploy:T0KEN-SECRET@host.example/r")
    assert creds is not None
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "T0KEN-SECRET" not in text and "deploy" not in text
    assert creds.scrub("fatal: T0KEN-SECRET rejected") == "fatal: *** rejected"
    token_as_user = Credentials("https", "h", "ghp_T0KEN", "")
    assert token_as_user.scrub("user ghp_T0KEN") == "user ***"


def test_the_command_line_carries_no_secret() -> None:
    creds = Credentials("https", "host.example", "deploy", "T0KEN-SECRET")
    config, env = helper_config(creds)
    argv = git_argv("fetch", "origin", config=config)
    assert not any("T0KEN-SECRET" in a or "deploy" in a for a in argv)
    assert argv[argv.index("credential.helper=") - 1] == "-c"  # configured helpers reset first
    assert env["MOSAIC_GIT_CREDENTIAL_PASSWORD"] == "T0KEN-SECRET"


def test_urls_differing_only_by_credentials_share_one_clone_name() -> None:
    names = {
        cache_name("https://host.example/org/r.git"),
        cache_name("https://deploy:T1@host.example/org/r.git"),
        cache_name("https://other:T2@host.example/org/r.git"),
    }
    assert len(names) == 1
    assert cache_name("https://host.example/org/other.git") not in names


# --- against a real origin that requires basic auth ---------------------------------------------


async def test_clone_with_credentials_stores_none(
    served: HttpOrigin, token: str, tmp_path: Path
) -> None:
    cache = await RepoCache(tmp_path / "cache").ensure(served.url)

    assert (
        sh("rev-parse", "refs/remotes/origin/main", cwd=cache).strip()
        == sh("--git-dir", str(served.bare), "rev-parse", "main").strip()
    )
    assert sh("config", "--get", "remote.origin.url", cwd=cache).strip() == served.bare_url
    assert files_holding(tmp_path / "cache", token) == []
    assert ("GET", "/origin.git/info/refs?service=git-upload-pack", 401) in served.requests


async def test_reuse_fetches_with_the_callers_credentials(
    served: HttpOrigin, origin: Origin, token: str, tmp_path: Path
) -> None:
    repos = RepoCache(tmp_path / "cache")
    first = await repos.ensure(served.url)
    newer = origin.commit({"new.txt": "x\n"}, "second")

    assert await repos.ensure(served.url) == first
    assert sh("rev-parse", "refs/remotes/origin/main", cwd=first).strip() == newer
    with pytest.raises(FetchFailed) as info:  # the shared clone gives nothing without a token
        await repos.ensure(served.url_with("deploy", "not-the-token"))
    assert "Authentication failed for 'http://127.0.0.1:" in info.value.message
    assert "not-the-token" not in info.value.message


async def test_agent_branch_is_pushed_with_the_credentials(
    served: HttpOrigin, token: str, tmp_path: Path
) -> None:
    cache = await RepoCache(tmp_path / "cache").ensure(served.url)
    wt = await create_worktree(
        cache,
        tmp_path / "wt",
        branch="mosaic/worker/T-http",
        base="main",
        credentials=repository_credentials(served.url),
    )
    assert token not in repr(wt)
    (wt.path / "feature.txt").write_text("agent work\n")
    sha = await commit_all(wt, "agent work", trailers={}, **AUTHOR)

    assert await check_conflicts(wt, "main") == []
    await push(wt)

    assert "mosaic/worker/T-http" in served.branches()
    assert served.show("mosaic/worker/T-http:feature.txt") == "agent work\n"
    assert sh("--git-dir", str(served.bare), "rev-parse", "mosaic/worker/T-http").strip() == sha
    assert files_holding(tmp_path / "cache", token) == []
    assert files_holding(wt.path, token) == []


async def test_wrong_token_fails_readably_without_the_token(
    served: HttpOrigin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + secrets.token_hex(8)
    started = time.monotonic()
    with pytest.raises(CloneFailed) as info:
        await RepoCache(tmp_path / "cache").ensure(served.url_with("deploy", wrong))

    assert time.monotonic() - started < 20  # no prompt waited for
    message = info.value.message
    assert message.startswith(f"cannot clone {served.bare_url}: ")
    assert "Authentication failed" in message
    shown = f"{message} {info.value.stderr} {info.value!r} {caplog.text}"
    assert wrong not in shown and "deploy:" not in shown
    assert served.authorizations  # the wrong token did reach the server, and was refused
    assert not list((tmp_path / "cache").glob("*.git"))


async def test_push_with_a_wrong_token_is_rejected_without_the_token(
    served: HttpOrigin, tmp_path: Path
) -> None:
    cache = await RepoCache(tmp_path / "cache").ensure(served.url)
    wrong = "wrong-" + secrets.token_hex(8)
    wt = await create_worktree(
        cache,
        tmp_path / "wt",
        branch="mosaic/worker/T-bad",
        base="main",
        credentials=repository_credentials(served.url_with("deploy", wrong)),
    )
    (wt.path / "x.txt").write_text("x\n")
    await commit_all(wt, "work", trailers={}, **AUTHOR)

    with pytest.raises(PushRejected) as info:
        await push(wt)

    assert "Authentication failed" in info.value.message
    assert wrong not in f"{info.value.message} {info.value.stderr}"
    assert "mosaic/worker/T-bad" not in served.branches()


async def test_no_prompt_and_no_stored_credential_whatever_the_host_configures(
    served: HttpOrigin, tmp_path: Path, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's askpass programs and credential store are neither asked nor written."""
    marker = tmp_path / "ASKED"
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\necho nope\n')
    askpass.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    store = tmp_path / "credential-store"
    (home / ".gitconfig").write_text(f"[credential]\n\thelper = store --file={store}\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SSH_ASKPASS", str(askpass))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    monkeypatch.setenv("DISPLAY", ":0")

    # no credentials at all: git fails at once instead of asking anyone
    with pytest.raises(CloneFailed, match="terminal prompts disabled"):
        await RepoCache(tmp_path / "c1").ensure(served.bare_url)
    assert not marker.exists()

    # with credentials, even the operator's GIT_ASKPASS is not asked (right or wrong token)
    monkeypatch.setenv("GIT_ASKPASS", str(askpass))
    with pytest.raises(CloneFailed, match="Authentication failed"):
        await RepoCache(tmp_path / "c2").ensure(served.url_with("deploy", "wrong-token"))
    await RepoCache(tmp_path / "c3").ensure(served.url)

    assert not marker.exists()
    assert not store.exists()  # 'credential approve' reached no configured helper
    assert files_holding(tmp_path, token) == []


async def test_a_redirect_to_another_host_gets_no_credentials(token: str) -> None:
    """The inline helper answers only for the repository URL's own protocol and host."""
    creds = Credentials("http", "127.0.0.1:1", "deploy", token)
    proc = await run_git(
        "credential", "fill", stdin="protocol=http\nhost=elsewhere.example\n\n", credentials=creds
    )
    assert token not in proc.stdout and proc.returncode != 0
    same = await asyncio.wait_for(
        run_git(
            "credential", "fill", stdin="protocol=http\nhost=127.0.0.1:1\n\n", credentials=creds
        ),
        10,
    )
    assert same.returncode == 0
    assert "username=deploy" in same.stdout
    assert "password=***" in same.stdout  # the runner scrubs what git prints
