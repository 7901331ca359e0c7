"""Heuristics shared by the secret rules: entropy, placeholders, environment lookups, key names."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter


def _words(text: str) -> list[str]:
    return text.split()


_PLACEHOLDER = re.compile(
    r"x{4,}|X{4,}|\*{3,}|\.{3}|<[^>]*>|\{\{|\}\}|\$\{|\$\(|%\(|%s\b|#\{|"
    r"(?i:changeme|change[_-]me|placeholder|example|sample|dummy|redacted|your[_-]|"
    r"insert[_-]|replace[_-]?me|todo|fixme|lorem|123456|abcdefgh|fake|not[_-]?a[_-]?real)"
)
_ENV_LOOKUP = re.compile(
    r"^\$[A-Za-z_{(]|^%[A-Za-z_]\w*%$|^[&*][A-Za-z_][\w-]*$|^![A-Za-z]|\$\{|\{\{|\$\(|%\(|#\{|process\.env|os\.environ|getenv|\benv\(|ENV\[|"
    r"secrets\.|vault:|^env:|^ref\+"
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DIGEST = re.compile(r"^(?i:sha(?:1|224|256|384|512)|md5|blake2b?)[-:]")
_CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_IDENTIFIER_CHAIN = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+(?:\(\))?$")
_KEY_TOKENS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_WEAK_DOC_PASSWORDS = frozenset(
    _words(
        "password pass passwd pwd secret changeme admin root test guest user username example "
        "mypassword yourpassword foo bar baz qux postgres mysql redis rabbitmq guest123 none null "
        "token apikey"
    )
)
_NON_SECRET_KEY_WORDS = frozenset(
    _words(
        "id ids name names path paths file files dir url uri uris link type types len length size "
        "count ttl timeout expiry expires expiration expire at version field fields header headers "
        "param params label labels description desc help message msg policy endpoint endpoints "
        "enabled enable required min max format pattern regex prefix suffix env var vars "
        "hash hashed sha digest checksum integrity fingerprint example sample placeholder "
        "algorithm alg rotation provider method mode kind source store class location "
        "lifetime validity index position limit"
    )
)


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_placeholder(value: str) -> bool:
    """A documentation placeholder (``xxxx``, ``<token>``, ``changeme``, ``...EXAMPLE``...)."""
    return bool(_PLACEHOLDER.search(value))


def is_env_lookup(value: str) -> bool:
    """A reference to a secret held elsewhere (``${X}``, ``process.env.X``, ``$X``, templating)."""
    return bool(_ENV_LOOKUP.search(value))


def char_classes(value: str) -> int:
    lower = any(c.islower() for c in value)
    upper = any(c.isupper() for c in value)
    digit = any(c.isdigit() for c in value)
    other = any(not c.isalnum() for c in value)
    return lower + upper + digit + other


def looks_random(value: str, *, min_len: int = 8) -> bool:
    """Enough length, entropy and character variety to be a generated credential."""
    n = len(value)
    if n < min_len:
        return False
    has_letter = any(c.isalpha() for c in value)
    has_digit_or_symbol = any(not c.isalpha() for c in value)
    mixed_case = any(c.islower() for c in value) and any(c.isupper() for c in value)
    e = entropy(value)
    if n >= 20 and e >= 3.4 and has_letter and (has_digit_or_symbol or mixed_case):
        return True
    return has_letter and has_digit_or_symbol and char_classes(value) >= 3 and e >= 3.0


def is_structural(value: str) -> bool:
    """Values that are identifiers, paths, URLs, UUIDs or digests rather than secrets."""
    return bool(
        value.startswith(("/", "./", "../", "~/", "file:"))
        or "://" in value
        or _UUID.match(value)
        or _DIGEST.match(value)
        or _CONSTANT_NAME.match(value)
        or _IDENTIFIER_CHAIN.match(value)
        or value.lower() in ("true", "false", "null", "none", "nil", "undefined")
    )


def key_is_secretish(key: str) -> bool:
    """False when the key names metadata about a secret (``token_url``, ``password_hash``...)."""
    words = [w.lower() for w in _KEY_TOKENS.findall(key)]
    return bool(words) and not any(w in _NON_SECRET_KEY_WORDS for w in words)


def generic_value_ok(value: str) -> bool:
    """The full guard chain for values found by the generic assignment rules."""
    lowered = value.lower()
    return not (
        is_placeholder(value)
        or is_env_lookup(value)
        or is_structural(value)
        or lowered in _WEAK_DOC_PASSWORDS
        or any(w in lowered for w in ("password", "secret", "token"))
    ) and looks_random(value)


def url_password_ok(user: str, password: str, host: str) -> bool:
    return not (
        password == user
        or password.lower() in _WEAK_DOC_PASSWORDS
        or is_placeholder(password)
        or is_env_lookup(password)
        or password.startswith(("{", "%", ":"))
        or is_placeholder(host)
        or host.lower() in ("host", "hostname", "server", "domain")
    )


def jwt_ok(token: str) -> bool:
    """The first segment decodes to a JSON object naming an algorithm or type."""
    header = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


def private_key_body_ok(body: str) -> bool:
    if is_placeholder(body):
        return False
    material = re.sub(r"\\n|[^A-Za-z0-9+/=]", "", body)
    return len(material) >= 64 and entropy(material) >= 4.0
