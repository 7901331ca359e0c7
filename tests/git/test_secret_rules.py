"""Every scanner rule finds its true-positive examples and stays quiet on its false positives."""

from __future__ import annotations

import pytest

from core.git.secret_guards import entropy, generic_value_ok, key_is_secretish, looks_random
from core.git.secret_rules import RULES, Rule
from core.git.secrets import mask, scan_text

TRUE = [(r, i, ex) for r in RULES for i, ex in enumerate(r.true_positives)]
FALSE = [(r, i, ex) for r in RULES for i, ex in enumerate(r.false_positives)]


def _path(rule: Rule) -> str:
    return "settings.env" if rule.config_only else "notes.txt"


def test_rule_catalogue_covers_the_required_kinds() -> None:
    ids = {r.id for r in RULES}
    assert len(ids) == len(RULES) >= 25
    required = {
        "aws-access-key-id",
        "aws-secret-access-key",
        "github-personal-access-token",
        "github-oauth-token",
        "github-user-to-server-token",
        "github-server-to-server-token",
        "github-refresh-token",
        "github-fine-grained-pat",
        "gitlab-personal-access-token",
        "anthropic-api-key",
        "openai-api-key",
        "openai-project-key",
        "slack-token",
        "slack-webhook-url",
        "stripe-secret-key",
        "google-api-key",
        "private-key",
        "jwt",
        "url-credentials",
        "npm-access-token",
        "sendgrid-api-key",
        "twilio-api-key",
        "generic-secret-assignment",
        "generic-secret-config",
    }
    assert required <= ids
    for rule in RULES:
        assert rule.true_positives, f"{rule.id} has no true-positive example"
        assert rule.false_positives, f"{rule.id} has no false-positive example"


@pytest.mark.parametrize(
    ("rule", "index", "example"), TRUE, ids=[f"{r.id}-{i}" for r, i, _ in TRUE]
)
def test_true_positive_is_found_and_masked(rule: Rule, index: int, example: str) -> None:
    findings = scan_text(example, _path(rule))
    assert rule.id in [f.rule for f in findings], example
    for finding in findings:
        assert finding.masked.endswith("****")
        assert len(finding.masked) <= 8
        # the mask never gives the value away: no long run of the example survives it
        assert finding.masked[:-4] == "" or finding.masked[:-4] in example
        assert finding.line == 1 or rule.multiline


@pytest.mark.parametrize(
    ("rule", "index", "example"), FALSE, ids=[f"{r.id}-{i}" for r, i, _ in FALSE]
)
def test_false_positive_is_ignored(rule: Rule, index: int, example: str) -> None:
    assert scan_text(example, _path(rule)) == []


def test_mask_hides_all_but_a_short_prefix() -> None:
    assert mask("ghp_abcdefghijklmnopqrstuvwxyz0123456789") == "ghp_****"
    assert mask("abcdefghijk") == "ab****"
    assert mask("abcdefg") == "****"
    assert mask("") == "****"


def test_guard_heuristics() -> None:
    assert entropy("") == 0.0
    assert entropy("aaaa") == 0.0
    assert entropy("abcd") == 2.0
    assert not looks_random("short")
    assert looks_random("Zq8#pL2vWx")
    assert not looks_random("aaaaaaaaaaaaaaaaaaaaaaaa")
    assert key_is_secretish("client_secret") and key_is_secretish("dbPassword")
    assert not key_is_secretish("tokenUrl") and not key_is_secretish("password_hash")
    assert not key_is_secretish("___")
    assert not generic_value_ok("true") and not generic_value_ok("/etc/secret/file.key")
    assert not generic_value_ok("settings.SECRET_KEY")


def test_code_files_do_not_use_the_unquoted_config_rule() -> None:
    line = "DB_PASSWORD=" + "Q3v" + "9xLm2Pz8Wt7Ks4Rn"
    assert [f.rule for f in scan_text(line, ".env")] == ["generic-secret-config"]
    assert scan_text(line, "app.py") == []
