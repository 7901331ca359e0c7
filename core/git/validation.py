"""Validation of user-supplied repository locations and branch names (pure Python, no git call)."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from core.git.errors import InvalidBranch, InvalidRepository

_MAX_REPOSITORY = 2048
_MAX_BRANCH = 255
_ALLOWED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"})
_PASSWORD_SCHEMES = frozenset({"https", "http"})
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.S)
_HELPER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SCP = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<path>.+)$",
    re.S,
)
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def _bad(repository: str, why: str) -> InvalidRepository:
    shown = _redacted(repository)  # before shortening, which could cut the '@' off a token
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return InvalidRepository(f"invalid repository {shown!r}: {why}")


def _redacted(text: str) -> str:
    """Everything between ``scheme://`` and the last ``@`` hidden (a malformed URL's userinfo
    may hold ``/``, ``?`` or ``#``); over-hiding in an error message costs nothing."""
    return re.sub(r"(://)[^@]*@", r"\1***@", text, flags=re.S)


def _is_git_repo(path: str) -> bool:
    if os.path.exists(os.path.join(path, ".git")):
        return True
    return (
        os.path.isfile(os.path.join(path, "HEAD"))
        and os.path.isdir(os.path.join(path, "objects"))
        and os.path.isdir(os.path.join(path, "refs"))
    )


def _validate_url(repository: str, scheme: str) -> str:
    if scheme.lower() not in _ALLOWED_SCHEMES:
        raise _bad(repository, f"transport {scheme!r} is not allowed (use https, ssh, git or file)")
    if any(c.isspace() for c in repository):
        raise _bad(repository, "URLs may not contain whitespace")
    parts = urlsplit(repository)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _bad(repository, "file:// URLs must name a local absolute path (file:///path)")
        if not parts.path.startswith("/"):
            raise _bad(repository, "file:// URLs need an absolute path")
        return urlunsplit(("file", "", parts.path.rstrip("/") or "/", parts.query, ""))
    host = parts.hostname or ""
    if not host or not _HOST.match(host if ":" not in host else f"[{host}]"):
        raise _bad(repository, "the URL has no valid host")
    if parts.username is not None and parts.username.startswith("-"):
        raise _bad(repository, "a user name may not start with '-'")
    try:
        port = parts.port
    except ValueError as exc:
        raise _bad(repository, "the URL has an invalid port") from exc
    if not parts.path or parts.path == "/":
        raise _bad(repository, "the URL names no repository path")
    if parts.fragment:
        raise _bad(repository, "URLs may not carry a fragment")
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0] + "@" if len(netloc) == 2 else ""
    if userinfo:
        if _CONTROL.search(unquote(userinfo)):
            raise _bad(repository, "the URL's user or password contains control characters")
        if ":" in userinfo and scheme not in _PASSWORD_SCHEMES:
            raise _bad(repository, f"a password in a {scheme}:// URL is not supported")
    hostport = f"[{host}]" if ":" in host else host.lower()
    if port is not None:
        hostport += f":{port}"
    return urlunsplit((scheme, userinfo + hostport, parts.path.rstrip("/"), parts.query, ""))


def validate_repository(repository: str) -> str:
    """Return the normalised form of a repository location, or raise :class:`InvalidRepository`.

    Accepted: ``https://``, ``http://``, ``ssh://``, ``git://`` and ``file://`` URLs, scp-like
    ``user@host:path`` and absolute paths of existing local git repositories. Refused: option
    injection (a leading ``-``), remote-helper transports (``ext::``, ``fd::``...), control
    characters and anything else. ``file://`` URLs are not checked for existence.

    An http(s) URL may carry ``user:token@``: it stays in the returned form, for
    :func:`~core.git.credentials.split_credentials` to take out before anything is stored. Other
    URLs may name a user (``ssh://git@host/...``) but carry no password.
    """
    if not isinstance(repository, str):
        raise InvalidRepository("invalid repository: expected a string")
    if not repository or not repository.strip():
        raise InvalidRepository("invalid repository: empty")
    if len(repository) > _MAX_REPOSITORY:
        raise _bad(repository, f"longer than {_MAX_REPOSITORY} characters")
    if _CONTROL.search(repository):
        raise _bad(repository, "contains control characters")
    if repository != repository.strip():
        raise _bad(repository, "leading or trailing whitespace")
    if repository.startswith("-"):
        raise _bad(repository, "may not start with '-' (option injection)")
    if _HELPER.match(repository):
        raise _bad(repository, "remote-helper transports ('<transport>::...') are not allowed")
    url = _URL.match(repository)
    if url:
        return _validate_url(repository, url.group("scheme"))
    if repository.startswith("/"):
        path = os.path.normpath(repository)
        if not os.path.isdir(path):
            raise _bad(repository, "no such directory")
        if not _is_git_repo(path):
            raise _bad(repository, "not a git repository")
        return path
    scp = _SCP.match(repository)
    if scp and "/" not in repository.split(":", 1)[0]:
        host, path = scp.group("host"), scp.group("path")
        if host.startswith("-") or path.startswith("-"):
            raise _bad(repository, "may not contain an option ('-...')")
        if not _HOST.match(host):
            raise _bad(repository, "invalid host")
        if any(c.isspace() for c in repository):
            raise _bad(repository, "scp-like addresses may not contain whitespace")
        user = scp.group("user")
        prefix = f"{user}@" if user else ""
        return f"{prefix}{host.lower()}:{path.rstrip('/') or path}"
    raise _bad(
        repository,
        "expected an https/ssh/git/file URL, user@host:path, or an absolute path to a git repo",
    )


def validate_branch(name: str) -> str:
    """Return ``name`` if git accepts it as a branch name, else raise :class:`InvalidBranch`.

    Reimplements ``git check-ref-format --branch``: no empty or ``.``-leading component, no
    ``.lock`` suffix, no ``..``, ``@{``, control characters, space, ``~^:?*[\\``, no leading,
    trailing or doubled ``/``, no trailing ``.``, not ``@``, not ``HEAD``, not starting with ``-``.
    """
    if not isinstance(name, str):
        raise InvalidBranch("invalid branch name: expected a string")

    def bad(why: str) -> InvalidBranch:
        shown = name if len(name) <= 80 else name[:77] + "..."
        return InvalidBranch(f"invalid branch name {shown!r}: {why}")

    if not name:
        raise InvalidBranch("invalid branch name: empty")
    if len(name) > _MAX_BRANCH:
        raise bad(f"longer than {_MAX_BRANCH} characters")
    if name.startswith("-"):
        raise bad("may not start with '-'")
    if name in ("@", "HEAD"):
        raise bad(f"{name!r} is reserved")
    if _BRANCH_FORBIDDEN.search(name):
        raise bad("contains a space, a control character or one of ~ ^ : ? * [ \\")
    if ".." in name:
        raise bad("may not contain '..'")
    if "@{" in name:
        raise bad("may not contain '@{'")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise bad("may not start or end with '/' or contain '//'")
    if name.endswith("."):
        raise bad("may not end with '.'")
    for component in name.split("/"):
        if component.startswith("."):
            raise bad("a path component may not start with '.'")
        if component.endswith(".lock"):
            raise bad("a path component may not end with '.lock'")
    return name
