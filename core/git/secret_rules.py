"""The secret scanner's rules, each with true- and false-positive examples as data.

Examples are assembled at import time from prefixes and deterministic pseudo-random bodies, so this
source file holds nothing that looks like a live credential. The tests check every example.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from core.git import secret_guards as g

ALNUM = string.ascii_letters + string.digits
LOWER_HEX = "0123456789abcdef"
B64 = ALNUM + "+/"
URLSAFE = ALNUM + "_-"
UPPER32 = string.ascii_uppercase + "234567"


def fake(n: int, alphabet: str = ALNUM, seed: str = "") -> str:
    """A deterministic pseudo-random string (test data that looks generated, not a real secret)."""
    rng = random.Random(f"{seed}:{n}:{alphabet}")
    return "".join(rng.choice(alphabet) for _ in range(n))


Check = Callable[[re.Match[str]], bool]


@dataclass(frozen=True)
class Rule:
    """One kind of secret. ``regex`` runs on candidate lines containing one of ``keywords``
    (lowercase); the ``secret`` group is what gets masked and vetted by ``check``."""

    id: str
    description: str
    regex: re.Pattern[str]
    keywords: tuple[str, ...]
    check: Check | None = None
    min_entropy: float = 0.0
    generic: bool = False
    multiline: bool = False
    config_only: bool = False
    true_positives: tuple[str, ...] = field(default=(), repr=False)
    false_positives: tuple[str, ...] = field(default=(), repr=False)

    def secret(self, match: re.Match[str]) -> str:
        return match.group("secret")

    def accepts(self, match: re.Match[str]) -> bool:
        secret = self.secret(match)
        if self.min_entropy and g.entropy(secret) < self.min_entropy:
            return False
        if not self.generic and g.is_placeholder(secret):
            return False
        return self.check is None or self.check(match)


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


_B = r"(?<![A-Za-z0-9_])"  # token start boundary
_E = r"(?![A-Za-z0-9])"  # token end boundary

_KW = (
    r"(?:secret|passw(?:or)?d|passwd|pwd|token|api[_.-]?key|apikey|access[_.-]?key|"
    r"auth[_.-]?(?:token|key)|credentials?|private[_.-]?key|client[_.-]?secret|"
    r"(?:signing|encryption|session|master|app)[_.-]?key)"
)
_KEY = rf"(?P<key>[A-Za-z0-9_.-]*{_KW}[A-Za-z0-9_.-]*)"
# the assignment rule finds quoted values first, then looks back for the key (much faster)
_KEY_BEFORE = re.compile(
    rf"(?i)(?P<key>[A-Za-z0-9_.-]*{_KW}[A-Za-z0-9_.-]*)[\"'\]]{{0,2}}\s*(?::|\?\?|\|\|)?$"
)


def _generic_check(m: re.Match[str]) -> bool:
    return g.key_is_secretish(m.group("key")) and g.generic_value_ok(m.group("secret"))


def _assignment_check(m: re.Match[str]) -> bool:
    key = _KEY_BEFORE.search(m.string, max(0, m.start() - 160), m.start())
    return (
        key is not None
        and g.key_is_secretish(key.group("key"))
        and g.generic_value_ok(m.group("secret"))
    )


def _url_check(m: re.Match[str]) -> bool:
    return g.url_password_ok(m.group("user"), m.group("secret"), m.group("host"))


def _rand_check(m: re.Match[str]) -> bool:
    return g.looks_random(m.group("secret"), min_len=16) and not g.is_env_lookup(m.group("secret"))


def _prefixed(
    id: str,
    description: str,
    prefix: str,
    body: str,
    keywords: tuple[str, ...],
    tp: tuple[str, ...],
    fp: tuple[str, ...],
    *,
    min_entropy: float = 3.0,
) -> Rule:
    return Rule(
        id,
        description,
        _rx(rf"{_B}(?P<secret>{prefix}{body}){_E}"),
        keywords,
        min_entropy=min_entropy,
        true_positives=tp,
        false_positives=fp,
    )


_GITHUB_KEYWORDS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")


def _github(kind: str, letter: str) -> Rule:
    pre = "gh" + letter + "_"
    return _prefixed(
        f"github-{kind}",
        f"GitHub {kind.replace('-', ' ')} ({pre})",
        pre,
        "[A-Za-z0-9]{36}",
        _GITHUB_KEYWORDS,  # one search for the five kinds: they share their candidate lines
        (f'token = "{pre}{fake(36, seed=kind)}"', f"GH_TOKEN={pre}{fake(36, seed=kind + '2')}"),
        (f"{pre}{'x' * 36}", f"{pre}{fake(20, seed=kind)}", f"my{pre}{fake(36, seed=kind)}zz"),
    )


_SLACK_TAIL = fake(24, seed="slack")
_PEM_BODY = "\n".join(fake(64, B64, seed=f"pem{i}") for i in range(4))
_JWT_HEAD = "ey" + "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
_JWT = (
    f"{_JWT_HEAD}.ey" + "J" + fake(40, URLSAFE, seed="jwtp") + "." + fake(43, URLSAFE, seed="jwts")
)

RULES: tuple[Rule, ...] = (
    Rule(
        "aws-access-key-id",
        "AWS access key id",
        _rx(r"(?<![A-Z0-9])(?P<secret>(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})(?![A-Z0-9])"),
        ("akia", "asia", "abia", "acca"),
        min_entropy=3.0,
        true_positives=(
            f"aws_access_key_id = {'AK' + 'IA'}{fake(16, UPPER32, 'aws')}",
            f'"AccessKeyId": "{"AS" + "IA"}{fake(16, UPPER32, "aws2")}"',
        ),
        false_positives=(
            "AKIA" + "IOSFODNN7EXAMPLE",
            "ASIAN_COUNTRY_CODES_LIST",
            "AKIA" + "AAAAAAAAAAAAAAAA",
        ),
    ),
    Rule(
        "aws-secret-access-key",
        "AWS secret access key",
        _rx(
            r"(?i)aws[a-z0-9_.-]{0,30}?(?:secret|private)[a-z0-9_.-]{0,30}[\"']?\s*(?:=|:=|:|=>)"
            r"\s*[\"']?(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        ("aws",),
        min_entropy=4.0,
        true_positives=(
            f"aws_secret_access_key = {fake(40, B64, 'awss')}",
            f'AWS_SECRET_ACCESS_KEY: "{fake(40, B64, "awss2")}"',
        ),
        false_positives=(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY",
            'aws_secret_access_key = os.environ["AWS_SECRET_ACCESS_KEY"]',
            "aws_secret_access_key = " + "a" * 40,
        ),
    ),
    _github("personal-access-token", "p"),
    _github("oauth-token", "o"),
    _github("user-to-server-token", "u"),
    _github("server-to-server-token", "s"),
    _github("refresh-token", "r"),
    _prefixed(
        "github-fine-grained-pat",
        "GitHub fine-grained personal access token",
        "github_pat_",
        "[A-Za-z0-9]{22}_[A-Za-z0-9]{59}",
        ("github_pat_",),
        (f"GITHUB_TOKEN={'github' + '_pat_'}{fake(22, seed='fg')}_{fake(59, seed='fg2')}",),
        ("github_pat_" + "x" * 22 + "_" + "x" * 59, "github_pat_<your-token>"),
    ),
    _prefixed(
        "gitlab-personal-access-token",
        "GitLab personal access token",
        "glpat-",
        r"[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]+){0,3}",
        ("glpat-",),
        (f"private_token: {'glpat' + '-'}{fake(20, URLSAFE, 'gl')}",),
        ("glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-<token>", "glpat-short"),
    ),
    _prefixed(
        "gitlab-token",
        "GitLab runner, deploy, trigger or other token",
        "gl(?:rt|dt|ptt|ft|imt|oas|cbt|soat|agent)-",
        r"[A-Za-z0-9_-]{20,}",
        ("glrt-", "gldt-", "glptt-", "glft-", "glimt-", "gloas-", "glcbt-", "glsoat-", "glagent-"),
        (
            f"token: {'glrt' + '-'}{fake(20, URLSAFE, 'glrt')}",
            f"{'gldt' + '-'}{fake(24, URLSAFE, 'gldt')}",
        ),
        ("glrt-REPLACE_ME_WITH_TOKEN", "gldt-short"),
    ),
    _prefixed(
        "anthropic-api-key",
        "Anthropic API key",
        r"sk-ant-[a-z]{2,6}\d{2}-",
        r"[A-Za-z0-9_-]{32,}",
        ("sk-ant-",),
        (
            f"ANTHROPIC_API_KEY={'sk-' + 'ant-api03-'}{fake(93, URLSAFE, 'ant')}AA",
            f'key = "{"sk-" + "ant-admin01-"}{fake(60, URLSAFE, "ant2")}"',
        ),
        (
            "sk-ant-api03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "sk-ant-...",
            "sk-ant-api03-<key>",
        ),
    ),
    _prefixed(
        "openai-api-key",
        "OpenAI API key",
        r"sk-",
        r"(?:(?:proj|svcacct|admin|None)-)?(?:[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
        r"|[A-Za-z0-9]{48})",
        ("sk-",),
        (
            f"OPENAI_API_KEY={'sk-'}{fake(20, seed='oai')}{'T3Blbk' + 'FJ'}{fake(20, seed='oai2')}",
            f"openai.api_key = '{'sk-'}{fake(48, seed='oai3')}'",
        ),
        ("sk-" + "x" * 48, "task-force-team-alpha", "disk-" + fake(48, seed="disk")),
    ),
    _prefixed(
        "openai-project-key",
        "OpenAI project, service-account or admin key",
        r"sk-(?:proj|svcacct|admin)-",
        r"[A-Za-z0-9_-]{40,}",
        ("sk-proj-", "sk-svcacct-", "sk-admin-"),
        (f"key={'sk-' + 'proj-'}{fake(120, URLSAFE, 'proj')}",),
        (
            "sk-proj-...",
            "sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "sk-proj-short",
        ),
    ),
    _prefixed(
        "slack-token",
        "Slack bot, user, app-level or legacy token",
        r"xox[abposre]-",
        r"(?:[0-9]{6,}-){1,3}[A-Za-z0-9]{10,}",
        ("xoxa-", "xoxb-", "xoxp-", "xoxo-", "xoxs-", "xoxr-", "xoxe-"),
        (
            f"SLACK_BOT_TOKEN={'xo' + 'xb-'}{fake(10, string.digits, 'sb')}-"
            f"{fake(10, string.digits, 'sb2')}-{_SLACK_TAIL}",
            f"{'xo' + 'xp-'}{fake(12, string.digits, 'sp')}-{fake(12, string.digits, 'sp2')}-"
            f"{fake(32, LOWER_HEX, 'sp3')}",
        ),
        ("xoxb-your-token-here", "xoxb-123-abc", "xoxb-000000-xxxxxxxxxxxx"),
    ),
    _prefixed(
        "slack-app-token",
        "Slack app-level token",
        r"xapp-\d-",
        r"[A-Z0-9]{9,}-\d{10,}-[a-f0-9]{32,}",
        ("xapp-",),
        (
            f"{'xa' + 'pp-'}1-{fake(11, string.ascii_uppercase + string.digits, 'xa')}-"
            f"{fake(13, string.digits, 'xa2')}-{fake(64, LOWER_HEX, 'xa3')}",
        ),
        ("xapp-1-XXXXXXXXXXX-0000000000000-xxxx", "xapp-token-goes-here"),
    ),
    Rule(
        "slack-webhook-url",
        "Slack incoming webhook URL",
        _rx(r"(?P<secret>hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,})"),
        ("hooks.slack.com",),
        min_entropy=3.5,
        true_positives=(
            f"url: https://hooks.slack.com/services/T{fake(8, UPPER32, 'sw')}/"
            f"B{fake(8, UPPER32, 'sw2')}/{fake(24, seed='sw3')}",
        ),
        false_positives=(
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXX",
            "see https://hooks.slack.com/services/<your-webhook>",
        ),
    ),
    Rule(
        "discord-webhook-url",
        "Discord webhook URL",
        _rx(r"(?P<secret>discord(?:app)?\.com/api/webhooks/\d{5,}/[A-Za-z0-9_-]{40,})"),
        ("discord",),
        min_entropy=3.5,
        true_positives=(
            f"https://discord.com/api/webhooks/{fake(18, string.digits, 'dw')}/"
            f"{fake(68, URLSAFE, 'dw2')}",
        ),
        false_positives=(
            "https://discord.com/api/webhooks/123456789/" + "x" * 60,
            "https://discord.com/developers/docs/resources/webhook",
        ),
    ),
    _prefixed(
        "stripe-secret-key",
        "Stripe secret or restricted key",
        r"(?:sk|rk)_(?:live|test)_",
        r"[A-Za-z0-9]{20,}",
        ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
        (
            f'Stripe.api_key = "{"sk" + "_live_"}{fake(24, seed="st")}"',
            f"STRIPE_KEY={'rk' + '_test_'}{fake(40, seed='st2')}",
        ),
        (
            f"{'pk' + '_live_'}{fake(24, seed='pk')}",
            "sk_test_xxxxxxxxxxxxxxxxxxxxxxxx",
            "sk_live_<secret>",
        ),
    ),
    _prefixed(
        "google-api-key",
        "Google API key",
        "AIza",
        r"[0-9A-Za-z_-]{35}",
        ("aiza",),
        (f'apiKey: "{"AI" + "za"}{fake(35, URLSAFE, "gk")}"',),
        ("AIza" + "x" * 35, "AIzaSyExample", "AIza" + "0" * 35),
    ),
    _prefixed(
        "google-oauth-client-secret",
        "Google OAuth client secret",
        "GOCSPX-",
        r"[A-Za-z0-9_-]{28}",
        ("gocspx-",),
        (f'"client_secret": "{"GOC" + "SPX-"}{fake(28, URLSAFE, "gc")}"',),
        ("GOCSPX-xxxxxxxxxxxxxxxxxxxxxxxxxxxx", "GOCSPX-<client-secret>"),
    ),
    Rule(
        "private-key",
        "Private key block (PEM, OpenSSH, PGP)",
        _rx(
            r"-----BEGIN[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----(?P<secret>[\s\S]{0,16000}?)"
            r"-----END[ A-Z0-9]{0,30}PRIVATE KEY(?: BLOCK)?-----"
        ),
        ("private key",),
        multiline=True,
        check=lambda m: g.private_key_body_ok(m.group("secret")),
        true_positives=(
            f"-----BEGIN RSA {'PRIVATE'} KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----",
            f'"private_key": "-----BEGIN {"PRIVATE"} KEY-----\\n{_PEM_BODY.replace(chr(10), "")}'
            '\\n-----END PRIVATE KEY-----\\n"',
            f"-----BEGIN OPENSSH {'PRIVATE'} KEY-----\n{_PEM_BODY}\n"
            "-----END OPENSSH PRIVATE KEY-----",
        ),
        false_positives=(
            'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):',
            "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\n<your key here>\n-----END PRIVATE KEY-----",
        ),
    ),
    Rule(
        "jwt",
        "JSON Web Token",
        _rx(
            r"(?<![A-Za-z0-9_-])(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}"
            r"\.[A-Za-z0-9_-]{16,})(?![A-Za-z0-9_-])"
        ),
        ("eyj",),
        check=lambda m: g.jwt_ok(m.group("secret")),
        true_positives=(f"Authorization: Bearer {_JWT}", f'"id_token": "{_JWT}"'),
        false_positives=(
            "eyJub3QiOiJqd3QifQ.eyJmb28iOiJiYXIifQ.c2lnbmF0dXJlc2lnbmF0dXJl",
            "eyJhbGciOi.eyJ.short",
        ),
    ),
    Rule(
        "url-credentials",
        "Password embedded in a URL",
        _rx(
            r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{1,20}://(?P<user>[^\s:/@\"'<>{}]{1,100}):"
            r"(?P<secret>[^\s@/\"'<>]{3,200})@(?P<host>[A-Za-z0-9.\[\]-]+)"
        ),
        ("://",),
        check=_url_check,
        true_positives=(
            f"DATABASE_URL=postgres://app:{fake(16, seed='db')}@db.internal:5432/app",
            f"git clone https://deploy:{fake(20, seed='gc')}@git.internal/org/r.git",
        ),
        false_positives=(
            "postgres://user:password@localhost/db",
            "https://user:${PASSWORD}@host.io",
            "redis://:changeme@cache:6379",
            "https://user:pass@example.com/x",
            "mysql://root:root@127.0.0.1/db",
            "http://host:8080/path@v2",
        ),
    ),
    _prefixed(
        "npm-access-token",
        "npm access token",
        "npm_",
        r"[A-Za-z0-9]{36}",
        ("npm_",),
        (f"//registry.npmjs.org/:_authToken={'np' + 'm_'}{fake(36, seed='npm')}",),
        ("npm_" + "x" * 36, "npm_config_registry_url_value_for_ci"),
    ),
    Rule(
        "npmrc-auth",
        "npm registry credential in .npmrc",
        _rx(r"(?:^|(?<=:))\s*(?:_authToken|_auth|_password)\s*=\s*[\"']?(?P<secret>[^\s\"']{8,})"),
        ("_authtoken", "_auth", "_password"),
        check=lambda m: g.generic_value_ok(m.group("secret")),
        true_positives=(
            f"//npm.internal/:_authToken={fake(32, LOWER_HEX + '-', 'npmrc')}",
            f"_auth = {fake(40, B64, 'npmauth')}=",
        ),
        false_positives=("//registry.npmjs.org/:_authToken=${NPM_TOKEN}", "_authToken=<token>"),
    ),
    _prefixed(
        "pypi-upload-token",
        "PyPI upload token",
        "pypi-AgEIcHlwaS5vcmc",
        r"[A-Za-z0-9_-]{50,}",
        ("pypi-ageichlwas5vcmc",),
        (f"password = {'pypi-' + 'AgEIcHlwaS5vcmc'}{fake(70, URLSAFE, 'pypi')}",),
        ("pypi-AgEIcHlwaS5vcmc" + "x" * 50, "pypi-token"),
    ),
    _prefixed(
        "sendgrid-api-key",
        "SendGrid API key",
        r"SG\.",
        r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        ("sg.",),
        (f"SENDGRID_API_KEY={'S' + 'G.'}{fake(22, URLSAFE, 'sg')}.{fake(43, URLSAFE, 'sg2')}",),
        ("SG." + "x" * 22 + "." + "x" * 43, "SG.example"),
    ),
    _prefixed(
        "twilio-api-key",
        "Twilio API key",
        "SK",
        r"[0-9a-f]{32}",
        ("sk",),
        (f"TWILIO_API_KEY={'S' + 'K'}{fake(32, LOWER_HEX, 'tw')}",),
        ("SK" + "0" * 32, "TASK" + fake(32, LOWER_HEX, "tw"), "SK_" + fake(32, LOWER_HEX, "tw")),
    ),
    _prefixed(
        "mailgun-api-key",
        "Mailgun API key",
        "key-",
        r"[0-9a-z]{32}",
        ("key-",),
        (f'MAILGUN_KEY="{"ke" + "y-"}{fake(32, string.digits + string.ascii_lowercase, "mg")}"',),
        ("monkey-" + fake(32, string.digits + string.ascii_lowercase, "mg"), "key-" + "x" * 32),
    ),
    Rule(
        "mailchimp-api-key",
        "Mailchimp API key",
        _rx(rf"{_B}(?P<secret>[0-9a-f]{{32}}-us\d{{1,2}}){_E}"),
        ("-us",),
        min_entropy=3.0,
        true_positives=(f"MAILCHIMP_KEY={fake(32, LOWER_HEX, 'mc')}-us{'1' + '4'}",),
        false_positives=("0" * 32 + "-us14", "locale = en-us1"),
    ),
    _prefixed(
        "huggingface-token",
        "Hugging Face access token",
        "hf_",
        r"[A-Za-z0-9]{34,40}",
        ("hf_",),
        (f"HF_TOKEN={'h' + 'f_'}{fake(34, string.ascii_letters, 'hf')}",),
        ("self.hf_model_name_for_the_current_test_case", "hf_" + "x" * 34),
    ),
    _prefixed(
        "digitalocean-token",
        "DigitalOcean token",
        r"do[por]_v1_",
        r"[a-f0-9]{64}",
        ("dop_v1_", "doo_v1_", "dor_v1_"),
        (f"token: {'do' + 'p_v1_'}{fake(64, LOWER_HEX, 'do')}",),
        ("dop_v1_" + "0" * 64, "dop_v1_<token>"),
    ),
    _prefixed(
        "shopify-token",
        "Shopify access token",
        r"shp(?:at|ca|pa|ss)_",
        r"[a-fA-F0-9]{32}",
        ("shpat_", "shpca_", "shppa_", "shpss_"),
        (f"SHOPIFY_TOKEN={'shp' + 'at_'}{fake(32, LOWER_HEX, 'shp')}",),
        ("shpat_" + "0" * 32, "shpat_example"),
    ),
    Rule(
        "azure-storage-key",
        "Azure storage account key",
        _rx(r"(?i)AccountKey=(?P<secret>[A-Za-z0-9+/]{86}==)"),
        ("accountkey=",),
        min_entropy=4.0,
        true_positives=(
            f"DefaultEndpointsProtocol=https;AccountName=x;{'Account' + 'Key'}="
            f"{fake(86, B64, 'az')}==;EndpointSuffix=core.windows.net",
        ),
        false_positives=("AccountKey=" + "A" * 86 + "==", "AccountKey=<storage-key>"),
    ),
    Rule(
        "telegram-bot-token",
        "Telegram bot token",
        _rx(r"(?<![0-9])(?P<secret>\d{8,10}:AA[A-Za-z0-9_-]{33})(?![A-Za-z0-9_-])"),
        (":aa",),
        min_entropy=3.0,
        true_positives=(
            f"BOT_TOKEN={fake(10, string.digits, 'tg')}{':A' + 'A'}{fake(33, URLSAFE, 'tg2')}",
        ),
        false_positives=("123456789:AA" + "x" * 33, "12:AAbc"),
    ),
    _prefixed(
        "databricks-token",
        "Databricks access token",
        "dapi",
        r"[a-f0-9]{32}(?:-\d)?",
        ("dapi",),
        (f"DATABRICKS_TOKEN={'da' + 'pi'}{fake(32, LOWER_HEX, 'db')}",),
        ("dapi" + "0" * 32, "rapid_api_key_name"),
    ),
    Rule(
        "authorization-header",
        "Bearer or Basic credential in an Authorization header",
        _rx(
            r"(?i)\b(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9_\-.=+/~]{16,})(?![A-Za-z0-9_\-.=+/~])"
        ),
        ("bearer", "basic "),
        generic=True,
        check=_rand_check,
        true_positives=(
            f"curl -H 'Authorization: Bearer {fake(40, URLSAFE, 'br')}' https://api",
            f"Authorization: Basic {fake(32, B64, 'ba')}==",
        ),
        false_positives=(
            'headers["Authorization"] = f"Bearer {token}"',
            "Authorization: Bearer ${API_TOKEN}",
            "Authorization: Bearer <token>",
            "basic authentication is configured in settings",
        ),
    ),
    Rule(
        "generic-secret-assignment",
        "High-entropy secret assigned in code or JSON",
        _rx(r"(?:=>?|:)\s*(?:[rbuf]{1,2})?(?P<q>[\"'`])(?P<secret>[^\"'`\s\\]{8,256})(?P=q)"),
        ("secret", "passw", "pwd", "token", "key", "credential"),
        generic=True,
        check=_assignment_check,
        true_positives=(
            f'db_password = "{fake(18, B64, "gp")}"',
            f'"client_secret": "{fake(32, URLSAFE, "gcs")}"',
            f"const apiKey = '{fake(24, ALNUM, 'gk2')}';",
            f'config["api_key"] = "{fake(32, LOWER_HEX, "gk3")}"',
        ),
        false_positives=(
            'password = os.environ["DB_PASSWORD"]',
            'token = "${GITHUB_TOKEN}"',
            'api_key = "your-api-key-here"',
            'password = "changeme"',
            'SECRET_KEY = "xxxxxxxxxxxxxxxx"',
            'token_url = "https://auth.io/token"',
            'password_hash = "' + fake(40, LOWER_HEX, "sha") + '"',
            'api_key = "123e4567-e89b-12d3-a456-426614174000"',
            'secret = "GITHUB_TOKEN"',
            "if password == 'hunter2hunter2':",
            'token = process.env.TOKEN || "";',
            '"integrity": "sha512-' + fake(86, B64, "int") + '=="',
        ),
    ),
    Rule(
        "generic-secret-config",
        "High-entropy secret in YAML, .env, INI or shell config",
        _rx(
            rf"(?i)^\s*(?:export\s+|ENV\s+|ARG\s+|set\s+)?[\"']?{_KEY}[\"']?\s*(?:=|:)\s*"
            r"(?P<secret>[^\s\"'`#;,]{8,256})\s*(?:[#;].*)?$"
        ),
        ("secret", "passw", "pwd", "token", "key", "credential"),
        generic=True,
        config_only=True,
        check=_generic_check,
        true_positives=(
            f"DB_PASSWORD={fake(20, B64, 'env')}",
            f"  api_key: {fake(32, URLSAFE, 'yaml')}",
            f"export AUTH_TOKEN={fake(40, LOWER_HEX, 'exp')}",
        ),
        false_positives=(
            "DB_PASSWORD=${DB_PASSWORD}",
            "api_key: changeme",
            "password: !vault |",
            "token: {{ secrets.TOKEN }}",
            "secret_name: prod-database-credentials",
            "SECRET_KEY=$SECRET_KEY",
            "password: *default_password",
        ),
    ),
)

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}


def _words(text: str) -> list[str]:
    return text.split()


CODE_EXTENSIONS = frozenset(
    _words(
        ".py .pyi .js .jsx .mjs .cjs .ts .tsx .go .java .kt .kts .scala .rb .rs .c .h .cc .cpp "
        ".hpp "
        ".cs .php .swift .m .mm .dart .lua .pl .ex .exs .erl .clj .groovy .vue .svelte"
    )
)
