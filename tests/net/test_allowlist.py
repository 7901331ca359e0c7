"""SANDBOX_ALLOWED_HOSTS: what an entry means, and which addresses stay out of reach."""

from __future__ import annotations

import ipaddress

import pytest

from core.errors import ConfigError
from core.net import Allowlist, address_problem, allowlist_entries, ip_literal, parse_rule
from core.settings import load_settings


def test_a_name_opens_ports_80_and_443_only() -> None:
    rules = Allowlist.parse("pypi.org")
    assert rules.check("pypi.org", 443).allowed
    assert rules.check("pypi.org", 80).allowed
    denied = rules.check("pypi.org", 22)
    assert not denied.allowed and denied.reason == "port 22 is not allowed for pypi.org"


def test_names_match_case_insensitively_and_with_a_trailing_dot() -> None:
    rules = Allowlist.parse("PyPI.org")
    assert rules.check("PYPI.ORG.", 443).allowed
    assert not rules.check("evilpypi.org", 443).allowed
    assert not rules.check("pypi.org.evil.com", 443).allowed
    assert not rules.check("sub.pypi.org", 443).allowed


def test_a_wildcard_covers_subdomains_at_any_depth_but_not_the_domain_itself() -> None:
    rules = Allowlist.parse("*.github.com")
    assert rules.check("api.github.com", 443).allowed
    assert rules.check("a.b.github.com", 80).allowed
    assert not rules.check("github.com", 443).allowed
    assert not rules.check("evilgithub.com", 443).allowed
    verdict = rules.check("api.github.com", 443)
    assert not verdict.explicit  # private addresses stay refused for pattern matches


def test_an_explicit_port_opens_that_port_only() -> None:
    rules = Allowlist.parse("registry.test:8443, *.cdn.test:8080")
    assert rules.check("registry.test", 8443).allowed
    assert not rules.check("registry.test", 443).allowed
    assert rules.check("x.cdn.test", 8080).allowed
    assert not rules.check("x.cdn.test", 80).allowed


def test_an_exact_name_is_explicit_even_when_a_pattern_also_matches() -> None:
    rules = Allowlist.parse("*.corp.test, build.corp.test:8080")
    assert rules.check("build.corp.test", 8080).explicit
    assert rules.check("build.corp.test", 443).allowed
    assert not rules.check("other.corp.test", 443).explicit


def test_an_empty_allowlist_refuses_everything() -> None:
    rules = Allowlist.parse("")
    assert not rules
    verdict = rules.check("pypi.org", 443)
    assert not verdict.allowed and "SANDBOX_ALLOWED_HOSTS is empty" in verdict.reason


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "8.8.8.8",
        "[::1]",
        "::1",
        "[::ffff:127.0.0.1]",
        "127.1",
        "0x7f.0.0.1",
        "2130706433",
        "017700000001",
    ],
)
def test_ip_literals_in_any_spelling_are_refused_unless_listed(host: str) -> None:
    assert ip_literal(host) is not None
    verdict = Allowlist.parse("*.example.com, example.com").check(host, 80)
    assert not verdict.allowed
    assert "IP literal" in verdict.reason


def test_a_listed_literal_is_allowed_and_explicit() -> None:
    rules = Allowlist.parse("10.0.0.5, [2001:db8::1]:8080")
    verdict = rules.check("10.0.0.5", 443)
    assert verdict.allowed and verdict.explicit
    assert verdict.literal == ipaddress.ip_address("10.0.0.5")
    assert rules.check("[2001:db8::1]", 8080).allowed
    assert not rules.check("[2001:db8::1]", 443).allowed
    # Another spelling of a listed literal is the same address.
    assert rules.check("0xa.0.0.5", 80).allowed


def test_names_are_not_mistaken_for_literals() -> None:
    for name in ("example.com", "abc", "deadbeef", "cafe.example", "1.example.com"):
        assert ip_literal(name) is None, name


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "not a globally routable"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback address (embedded"),
        ("::ffff:10.0.0.1", "private address (embedded"),
        ("::ffff:169.254.169.254", "link-local address (embedded"),
        ("64:ff9b::a00:1", "private address (embedded"),
        ("2002:7f00:1::", "loopback address (embedded"),
        ("2001:db8::1", "private"),
    ],
)
def test_non_public_addresses_have_a_problem(address: str, problem: str) -> None:
    found = address_problem(ipaddress.ip_address(address))
    assert found is not None and problem in found


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::6810:84e5", "::ffff:8.8.8.8"])
def test_public_addresses_have_none(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("*", "would open all egress"),
        ("https://pypi.org", "not a URL"),
        ("10.0.0.0/8", "not a URL or a network"),
        ("a.*.com", "'*' only as a whole first label"),
        ("*pypi.org", "'*' only as a whole first label"),
        ("pypi.org:0", "port must be a number from 1 to 65535"),
        ("pypi.org:http", "port must be a number"),
        ("[::1", "unclosed"),
        ("bad_host!.com", "not a host name"),
        ("fe80::1%eth0", "zone ids"),
        ("-leading.example", "not a host name"),
    ],
)
def test_bad_entries_are_refused_with_the_entry_and_the_reason(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rule(entry)


def test_entries_are_normalized_for_the_settings() -> None:
    assert allowlist_entries(" PyPI.org , *.GitHub.com:8443,, [::1]:99,10.0.0.1 ") == (
        "pypi.org",
        "*.github.com:8443",
        "[::1]:99",
        "10.0.0.1",
    )


def test_settings_parse_sandbox_allowed_hosts_and_refuse_a_bad_pattern(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SANDBOX_ALLOWED_HOSTS", "pypi.org,*.pythonhosted.org")
    monkeypatch.setenv("SANDBOX_PROXY_MAX_CONNECTIONS", "8")
    settings = load_settings()
    assert settings.sandbox_allowed_hosts == ("pypi.org", "*.pythonhosted.org")
    assert settings.sandbox_proxy_max_connections == 8
    monkeypatch.setenv("SANDBOX_ALLOWED_HOSTS", "pypi.org,*.*.org")
    with pytest.raises(ConfigError, match=r"SANDBOX_ALLOWED_HOSTS: .*'\*\.\*\.org'"):
        load_settings()
    monkeypatch.delenv("SANDBOX_ALLOWED_HOSTS")
    monkeypatch.setenv("SANDBOX_PROXY_MAX_CONNECTIONS", "0")
    with pytest.raises(ConfigError, match="SANDBOX_PROXY_MAX_CONNECTIONS"):
        load_settings()


def test_settings_default_to_no_egress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_ALLOWED_HOSTS", raising=False)
    settings = load_settings()
    assert settings.sandbox_allowed_hosts == ()
    assert not Allowlist.parse(settings.sandbox_allowed_hosts)
