"""Credentials of a repository URL: split from the URL, kept in memory, handed to git per command.

A repository given as ``https://user:token@host/repo.git`` is stored in the clone cache as
``https://host/repo.git`` (:func:`split_credentials`); the user and token live only in the
orchestrator's memory (a :class:`Credentials` carried by the caller) and reach the host's git
through the environment of the one git process that needs them (:func:`helper_config`):

- ``-c credential.helper=`` empties the helper list, so no configured helper (``store``,
  ``cache``, a desktop keyring) is asked, or told to save the token, on ``credential approve``;
- ``-c credential.helper=!<shell function>`` adds an inline helper (no file at all) that answers
  ``get`` with ``username``/``password`` read from ``MOSAIC_GIT_CREDENTIAL_*`` variables of its
  own environment, and only for the protocol and host of the repository URL: a redirect to
  another host or scheme gets nothing.

The command line holds no secret; the environment of a root-owned process is readable by root
only, and sandboxes (their own PID namespace, another uid) never see host processes. A wrong token
fails with git's ``Authentication failed for '<url without credentials>'``; since the helper
answered, git never falls back to a prompt, and ``GIT_TERMINAL_PROMPT=0`` plus ``core.askPass=``
(see :mod:`core.git.runner`) keep every other path non-interactive.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from core.git.validation import validate_repository

CREDENTIAL_SCHEMES = frozenset({"http", "https"})
"""Schemes whose URL userinfo is a credential given to git's credential subsystem."""

ENV_PREFIX = "MOSAIC_GIT_CREDENTIAL_"

# ``git credential`` calls ``<helper> get|store|erase`` with ``key=value`` lines on stdin. Values
# are never interpolated into the script: they come from the environment, printed with ``%s``.
_HELPER = (
    "!f() { "
    'test "$1" = get || exit 0; '
    "p= h=; "
    'while IFS= read -r l; do case "$l" in '
    'protocol=*) p="${l#protocol=}";; host=*) h="${l#host=}";; esac; done; '
    f'test "$p" = "${ENV_PREFIX}PROTOCOL" && test "$h" = "${ENV_PREFIX}HOST" || exit 0; '
    f'printf \'username=%s\\npassword=%s\\n\' "${ENV_PREFIX}USERNAME" "${ENV_PREFIX}PASSWORD"; '
    "}; f"
)
_MIN_SCRUB = 4


@dataclass(frozen=True, repr=False)
class Credentials:
    """A user and password (or token) for one ``protocol://host[:port]``. Never shown."""

    protocol: str
    host: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials({self.protocol}://***@{self.host})"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """The values to hide from any text: the password, or the user when it is the token.

        A bare ``https://TOKEN@host`` (a common way to pass a token) has the secret as the user;
        with a password, the user (``deploy``, ``x-access-token``) is a plain name. Values shorter
        than four characters are not scrubbed (doing so would garble every message).
        """
        value = self.password or self.username
        return (value,) if len(value) >= _MIN_SCRUB else ()

    def scrub(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return text


def split_credentials(url: str) -> tuple[str, Credentials | None]:
    """``(url without userinfo, its credentials)`` for an http(s) URL with ``user[:pass]@``.

    ``url`` is a normalised repository location (:func:`~core.git.validation.validate_repository`).
    Other locations (paths, ``file://``, ``ssh://git@host``, ``git@host:path``: an ssh user name
    is not a secret) come back unchanged with ``None``. The user and password are percent-decoded
    as git decodes them.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in CREDENTIAL_SCHEMES:
        return url, None
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, Credentials(parts.scheme.lower(), hostport, unquote(user), unquote(password))


def helper_config(credentials: Credentials) -> tuple[tuple[str, ...], dict[str, str]]:
    """The ``-c`` options and the environment that give ``credentials`` to one git process."""
    config = ("credential.helper=", f"credential.helper={_HELPER}")
    env = {
        f"{ENV_PREFIX}PROTOCOL": credentials.protocol,
        f"{ENV_PREFIX}HOST": credentials.host,
        f"{ENV_PREFIX}USERNAME": credentials.username,
        f"{ENV_PREFIX}PASSWORD": credentials.password,
    }
    return config, env


def split_repository(repository: str) -> tuple[str, Credentials | None]:
    """Validate and normalise ``repository``, then :func:`split_credentials` it."""
    return split_credentials(validate_repository(repository))


def repository_credentials(repository: str) -> Credentials | None:
    """The credentials a repository location carries (``None`` for most), validated."""
    return split_repository(repository)[1]
