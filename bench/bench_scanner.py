"""Secret scanner benchmark: throughput against detect-secrets, precision/recall of both, and the
scan of a push (MB/s, peak RSS).

    .venv/bin/python bench/bench_scanner.py [--mb 24] [--baseline-mb 4] [--big-mb 64]

1. Quality: a labelled corpus (one candidate per line: live-looking secrets of many kinds, and
   lines built to bait false positives) is scanned line by line by both; a line counts as flagged
   if the scanner reports anything on it. Prints precision, recall and the misses of each.
2. Throughput: a synthetic unified diff (code, lockfile integrity hashes, git SHAs, UUIDs, URLs,
   base64 blobs, a few planted secrets) is scanned by ``core.git.secrets.scan_text`` (in memory),
   by the streaming scanner the push uses (fed 1 MiB chunks) and by detect-secrets 1.5.0
   (``SecretsCollection.scan_file`` with its default plugins) in the same run. detect-secrets is
   far slower, so it scans the first ``--baseline-mb`` MB of the same file; both figures are MB/s,
   and the ratio compares rates.
3. Push scans (``scan_range``, what the finish stage runs), each in a child process whose peak RSS
   (``VmHWM``) is read from ``/proc``: the synthetic diff committed as files; then a commit adding
   binary blobs (random bytes around printable strings and planted secrets, one UTF-16 file) and
   a ``--big-mb`` MiB text file (read with the size limit raised to let it through).

The corpus is built by this script with deterministic pseudo-random bodies, so figures are
reproducible; it is our own labelling, not an external benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.git.secret_rules import ALNUM, B64, LOWER_HEX, UPPER32, URLSAFE, fake
from core.git.secret_stream import CHUNK, StreamScanner
from core.git.secrets import scan_text

HEX = LOWER_HEX


def _r(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


# -- labelled corpus ---------------------------------------------------------------------------


def positives(rng: random.Random) -> list[tuple[str, str]]:
    """(kind, line) pairs that contain a real-looking secret."""

    def r(n: int, alphabet: str = ALNUM) -> str:
        return _r(rng, n, alphabet)

    makers: list[tuple[str, Callable[[], str]]] = [
        ("aws-key-id", lambda: f"aws_access_key_id = {'AKIA'}{r(16, UPPER32)}"),
        ("aws-secret", lambda: f"aws_secret_access_key = {r(40, B64)}"),
        ("github-pat", lambda: f"GITHUB_TOKEN={'ghp' + '_'}{r(36)}"),
        ("github-oauth", lambda: f"token: {'gho' + '_'}{r(36)}"),
        ("github-fine-grained", lambda: f"export GH_PAT={'github_pat' + '_'}{r(22)}_{r(59)}"),
        ("gitlab", lambda: f"private_token = '{'glpat' + '-'}{r(20, URLSAFE)}'"),
        ("anthropic", lambda: f"ANTHROPIC_API_KEY={'sk-ant' + '-api03-'}{r(93, URLSAFE)}AA"),
        ("openai-legacy", lambda: f'openai.api_key = "{"sk" + "-"}{r(48)}"'),
        ("openai-project", lambda: f"OPENAI_API_KEY={'sk-proj' + '-'}{r(100, URLSAFE)}"),
        (
            "slack-bot",
            lambda: (
                f"SLACK_TOKEN={'xoxb' + '-'}{r(11, '0123456789')}-{r(12, '0123456789')}-{r(24)}"
            ),
        ),
        (
            "slack-webhook",
            lambda: (
                f"webhook: https://hooks.slack.com/services/T{r(8, UPPER32)}/"
                f"B{r(8, UPPER32)}/{r(24)}"
            ),
        ),
        ("stripe", lambda: f"stripe.api_key = '{'sk_live' + '_'}{r(24)}'"),
        ("google", lambda: f'"apiKey": "{"AIza"}{r(35, URLSAFE)}",'),
        (
            "jwt",
            lambda: (
                "Authorization: Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
                f"eyJ{r(60, URLSAFE)}.{r(80, URLSAFE)}"
            ),
        ),
        ("url-credentials", lambda: f"DATABASE_URL=postgres://svc:{r(18)}@db.prod.internal/app"),
        ("npm", lambda: f"//registry.npmjs.org/:_authToken={'npm' + '_'}{r(36)}"),
        ("sendgrid", lambda: f"SENDGRID_API_KEY={'SG' + '.'}{r(22, URLSAFE)}.{r(43, URLSAFE)}"),
        ("twilio", lambda: f"TWILIO_KEY={'SK'}{r(32, HEX)}"),
        ("generic-py", lambda: f'db_password = "{r(20, ALNUM + "!@#%^&*")}"'),
        ("generic-json", lambda: f'  "client_secret": "{r(32, URLSAFE)}",'),
        ("generic-yaml", lambda: f"  api_key: {r(32, ALNUM)}"),
        ("generic-env", lambda: f"SECRET_KEY={r(50, ALNUM + '-_!')}"),
        (
            "allow-commented",
            lambda: f"key = '{'AKIA'}{r(16, UPPER32)}'  # pragma: allowlist secret",
        ),
        ("huggingface", lambda: f"HF_TOKEN={'hf' + '_'}{r(34, string.ascii_letters)}"),
        ("pypi", lambda: f"password = {'pypi-AgEIcHlwaS5vcmc'}{r(70, URLSAFE)}"),
        ("basic-auth", lambda: f"Authorization: Basic {r(40, B64)}="),
    ]
    return [(kind, make()) for kind, make in makers for _ in range(8)]


def negatives(rng: random.Random) -> list[tuple[str, str]]:
    """(kind, line) pairs that hold no secret but look like one to a naive scanner."""

    def r(n: int, alphabet: str = ALNUM) -> str:
        return _r(rng, n, alphabet)

    uuid = lambda: f"{r(8, HEX)}-{r(4, HEX)}-{r(4, HEX)}-{r(4, HEX)}-{r(12, HEX)}"  # noqa: E731
    makers: list[tuple[str, Callable[[], str]]] = [
        ("git-sha", lambda: f"commit {r(40, HEX)}"),
        ("git-sha-assign", lambda: f'rev = "{r(40, HEX)}"'),
        ("docker-digest", lambda: f"image: app@sha256:{r(64, HEX)}"),
        ("lockfile", lambda: f'      "integrity": "sha512-{r(86, B64)}==",'),
        (
            "lockfile-resolved",
            lambda: f'  resolved "https://registry.yarnpkg.com/x/-/x.tgz#{r(40, HEX)}"',
        ),
        ("uuid", lambda: f"request_id = '{uuid()}'"),
        ("aws-example", lambda: "aws_access_key_id = AKIA" + "IOSFODNN7EXAMPLE"),
        (
            "aws-example-secret",
            lambda: "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("placeholder-x", lambda: "GITHUB_TOKEN=ghp_" + "x" * 36),
        ("placeholder-angle", lambda: "api_key = '<your-api-key>'"),
        ("placeholder-changeme", lambda: "password: changeme"),
        ("env-python", lambda: 'token = os.environ["API_TOKEN"]'),
        ("env-shell", lambda: "password: ${DB_PASSWORD}"),
        ("env-node", lambda: "const secret = process.env.CLIENT_SECRET;"),
        ("env-actions", lambda: "token: ${{ secrets.GITHUB_TOKEN }}"),
        ("function-call", lambda: "password = get_password(user)"),
        ("comparison", lambda: f"if token == expected_{r(6).lower()}:"),
        ("token-url", lambda: 'token_url = "https://oauth2.googleapis.com/token"'),
        ("password-hash-name", lambda: f'password_hash = "{r(64, HEX)}"'),
        ("base64-image", lambda: f'src="data:image/png;base64,{r(120, B64)}"'),
        (
            "css-hash",
            lambda: f'<link href="/static/app.{r(20, HEX)}.css" integrity="sha384-{r(64, B64)}">',
        ),
        ("doc-url-creds", lambda: "postgres://user:password@localhost:5432/db"),
        ("key-name-only", lambda: "API_KEY_NAME = 'X-Api-Key'"),
        ("random-identifier", lambda: f"cache_key = '{r(6)}:{r(6)}'"),
        ("go-sum", lambda: f"github.com/pkg/errors v0.9.1 h1:{r(43, B64)}="),
        ("private-key-mention", lambda: 'if pem.startswith("-----BEGIN RSA PRIVATE KEY-----"):'),
    ]
    return [(kind, make()) for kind, make in makers for _ in range(8)]


# -- scanners --------------------------------------------------------------------------------


def ours_flags(lines: list[str]) -> list[bool]:
    return [bool(scan_text(line, "corpus.txt")) for line in lines]


def ds_flags(lines: list[str]) -> list[bool]:
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import default_settings

    with default_settings():
        return [any(True for _ in scan_line(line)) for line in lines]


def ds_scan_file(path: Path) -> int:
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import default_settings

    collection = SecretsCollection()
    with default_settings():
        collection.scan_file(str(path))
    return sum(len(s) for _, s in collection.data.items())


# -- synthetic diff ----------------------------------------------------------------------------


def synthetic_diff(target_bytes: int, rng: random.Random) -> str:
    words = [
        "config",
        "value",
        "result",
        "handler",
        "request",
        "token_count",
        "user",
        "items",
        "index",
        "cache",
        "response",
        "payload",
        "key",
        "session",
        "buffer",
        "path",
    ]
    neg = [line for _, line in negatives(rng)]
    pos = [line for _, line in positives(rng)]
    parts: list[str] = []
    size = 0
    n = 0
    while size < target_bytes:
        n += 1
        name = f"src/module_{n}/{rng.choice(words)}_{n}.py"
        lines = []
        for _ in range(rng.randint(20, 80)):
            roll = rng.random()
            if roll < 0.04:
                lines.append(rng.choice(neg))
            elif roll < 0.0006 + 0.04:
                lines.append(rng.choice(pos))
            else:
                a, b = rng.choice(words), rng.choice(words)
                lines.append(
                    f"    {a}_{rng.randint(0, 999)} = {b}.get('{rng.choice(words)}', "
                    f"{rng.randint(0, 10**6)})  # {fake(12, seed=str(rng.random()))}"
                )
        body = "\n".join("+" + line for line in lines)
        chunk = (
            f"diff --git a/{name} b/{name}\nnew file mode 100644\n"
            f"index 0000000..{_r(rng, 7, HEX)}\n"
            f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1,{len(lines)} @@\n{body}\n"
        )
        parts.append(chunk)
        size += len(chunk)
    return "".join(parts)


def quality(name: str, flags: list[bool], labels: list[tuple[bool, str]]) -> tuple[float, float]:
    tp = sum(1 for f, (p, _) in zip(flags, labels, strict=True) if f and p)
    fp = sum(1 for f, (p, _) in zip(flags, labels, strict=True) if f and not p)
    fn = sum(1 for f, (p, _) in zip(flags, labels, strict=True) if not f and p)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    missed = sorted({k for f, (p, k) in zip(flags, labels, strict=True) if p and not f})
    noisy = sorted({k for f, (p, k) in zip(flags, labels, strict=True) if f and not p})
    print(
        f"  {name:<15} precision {precision:6.1%}  recall {recall:6.1%}  (tp={tp} fp={fp} fn={fn})"
    )
    print(f"  {'':<15} missed kinds: {', '.join(missed) or '-'}")
    print(f"  {'':<15} false-positive kinds: {', '.join(noisy) or '-'}")
    return precision, recall


# -- push scans in a child process ----------------------------------------------------------------

_CHILD = """
import asyncio, json, sys, time
from pathlib import Path
from core.git.secrets import scan_range

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

repo, rev_range, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = hwm_kib()
start = time.perf_counter()
report = asyncio.run(scan_range(Path(repo), rev_range, max_blob_bytes=limit))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": report.bytes, "blobs": report.blobs,
                  "findings": len(report.findings), "too_large": len(report.too_large),
                  "hwm_before_kib": before, "hwm_kib": hwm_kib()}))
"""


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b")
    env.update(GIT_COMMITTER_EMAIL="b@b", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, check=True)
    return done.stdout.decode()


def _commit(repo: Path, files: dict[str, bytes], message: str) -> None:
    for name, content in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)


def diff_files(diff: str) -> dict[str, bytes]:
    """The files a synthetic diff adds, with their added lines as content."""
    files: dict[str, bytes] = {}
    for block in diff.split("diff --git a/")[1:]:
        name = block.split(" ", 1)[0]
        added = [
            line[1:] for line in block.split("\n") if line.startswith("+") and line[:4] != "+++ "
        ]
        files[name] = ("\n".join(added) + "\n").encode()
    return files


def binary_blobs(rng: random.Random, count: int = 16, size: int = 1 << 20) -> dict[str, bytes]:
    """Random binary blobs with printable strings and, in a few, a planted secret."""
    pos = [line for _, line in positives(rng)]
    blobs: dict[str, bytes] = {}
    for i in range(count):
        parts = []
        while sum(map(len, parts)) < size:
            parts.append(rng.randbytes(rng.randint(200, 4000)))
            parts.append(b"\0" + f"symbol_{rng.randint(0, 10**6)} resource {i}".encode() + b"\0")
        if i % 4 == 0:
            parts.insert(len(parts) // 2, b"\0" + rng.choice(pos).encode() + b"\0")
        blobs[f"assets/blob_{i}.bin"] = b"".join(parts)[:size]
    blobs["config/windows.ini"] = f"[auth]\n{rng.choice(pos)}\n".encode("utf-16")
    return blobs


def big_text(target: int, rng: random.Random) -> bytes:
    """About ``target`` bytes of code-like text with a secret near the end."""
    block = synthetic_diff(4 << 20, rng).encode()
    out = bytearray()
    while len(out) < target:
        out += block
    return bytes(out[:target]) + f"\naws_access_key_id = {'AKIA'}{fake(16, UPPER32)}\n".encode()


def push_scan(repo: Path, rev_range: str, limit: int) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(repo), rev_range, str(limit)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def print_push_scan(name: str, r: dict[str, float]) -> None:
    mb = r["bytes"] / 1024 / 1024
    peak, growth = r["hwm_kib"] / 1024, (r["hwm_kib"] - r["hwm_before_kib"]) / 1024
    print(
        f"  {name:<28} {mb:6.1f} MB in {r['seconds']:6.2f} s = {mb / r['seconds']:6.2f} MB/s; "
        f"peak RSS {peak:5.1f} MiB (+{growth:.1f} MiB during the scan); "
        f"{int(r['findings'])} findings"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=24.0, help="size of the synthetic diff")
    parser.add_argument(
        "--baseline-mb",
        type=float,
        default=4.0,
        help="how much of it detect-secrets scans (it is much slower)",
    )
    parser.add_argument("--big-mb", type=int, default=64, help="size of the big text file (MiB)")
    args = parser.parse_args()

    rng = random.Random(20240604)
    print("== quality on a labelled corpus (one candidate per line) ==")
    labelled = [(True, k, line) for k, line in positives(rng)] + [
        (False, k, line) for k, line in negatives(rng)
    ]
    lines = [line for _, _, line in labelled]
    labels = [(p, k) for p, k, _ in labelled]
    print(
        f"  {sum(p for p, _ in labels)} positive and {sum(not p for p, _ in labels)} negative lines"
    )
    quality("mosaic", ours_flags(lines), labels)
    quality("detect-secrets", ds_flags(lines), labels)

    print(f"\n== throughput on a {args.mb:.0f} MB synthetic diff ==")
    text = synthetic_diff(int(args.mb * 1024 * 1024), rng)
    size_mb = len(text.encode()) / 1024 / 1024
    start = time.perf_counter()
    ours = scan_text(text, "changes.diff")
    ours_s = time.perf_counter() - start
    ours_rate = size_mb / ours_s
    print(
        f"  mosaic          {size_mb:6.1f} MB in {ours_s:6.2f} s = {ours_rate:7.2f} MB/s "
        f"({len(ours)} findings)"
    )
    data = text.encode()
    start = time.perf_counter()
    stream = StreamScanner("changes.diff")
    for i in range(0, len(data), CHUNK):
        stream.feed(data[i : i + CHUNK])
    streamed = stream.close()
    stream_s = time.perf_counter() - start
    stream_rate = size_mb / stream_s
    print(
        f"  mosaic stream   {size_mb:6.1f} MB in {stream_s:6.2f} s = {stream_rate:7.2f} MB/s "
        f"({len(streamed)} findings, 1 MiB chunks)"
    )

    cut = text.encode()[: int(args.baseline_mb * 1024 * 1024)]
    cut = cut[: cut.rfind(b"\n") + 1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "changes.diff"
        path.write_bytes(cut)
        base_mb = len(cut) / 1024 / 1024
        start = time.perf_counter()
        count = ds_scan_file(path)
        ds_s = time.perf_counter() - start
        start = time.perf_counter()
        ours_same = scan_text(cut.decode(), "changes.diff")
        ours_same_s = time.perf_counter() - start
    ds_rate = base_mb / ds_s
    print(
        f"  detect-secrets  {base_mb:6.1f} MB in {ds_s:6.2f} s = {ds_rate:7.2f} MB/s "
        f"({count} findings)"
    )
    print(
        f"  mosaic (same {base_mb:.1f} MB) in {ours_same_s:.2f} s = "
        f"{base_mb / ours_same_s:.2f} MB/s ({len(ours_same)} findings)"
    )
    print(f"  ratio: mosaic is {ours_rate / ds_rate:.1f}x detect-secrets' throughput")
    print(f"  ratio: mosaic stream is {stream_rate / ds_rate:.1f}x detect-secrets' throughput")

    print("\n== push scans (scan_range in a child process) ==")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        _git(repo, "init", "-q")
        _commit(repo, {"README.md": b"bench\n"}, "base")
        _commit(repo, diff_files(text), "the synthetic diff as files")
        print_push_scan("synthetic diff as files", push_scan(repo, "HEAD~1..HEAD", 10 << 20))
        blobs = binary_blobs(rng)
        _commit(repo, blobs, "binary blobs")
        print_push_scan(f"{len(blobs)} binary blobs", push_scan(repo, "HEAD~1..HEAD", 10 << 20))
        _commit(repo, {"data/big.txt": big_text(args.big_mb << 20, rng)}, "big text file")
        print_push_scan(
            f"a {args.big_mb} MiB text file",
            push_scan(repo, "HEAD~1..HEAD", (args.big_mb + 1) << 20),
        )
        capped = push_scan(repo, "HEAD~1..HEAD", 10 << 20)
        print(
            f"  with SCAN_MAX_FILE_MB=10 it is not read: {int(capped['too_large'])} blob too large"
        )
        print_push_scan(
            "all three commits", push_scan(repo, "HEAD~3..HEAD", (args.big_mb + 1) << 20)
        )


if __name__ == "__main__":
    main()
