"""The streaming scanner: bounded windows that miss nothing at their edges, binary data read
through its strings, and masking of any text the orchestrator shows."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.git.secret_rules import B64, UPPER32, URLSAFE, fake
from core.git.secret_stream import OVERLAP, WINDOW, StreamScanner
from core.git.secrets import mask_data, mask_text, scan_text

from .conftest import sh

GH = "gh" + "p_" + fake(36, seed="s-gh")
AWS = "AK" + "IA" + fake(16, UPPER32, seed="s-aws")
ANT = "sk-" + "ant-api03-" + fake(93, URLSAFE, seed="s-ant") + "AA"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(fake(64, B64, seed=f"s-pem{i}") for i in range(5))
    + "\n-----END RSA PRIVATE KEY-----\n"
)
FILLER = "    value = config.get('handler', 42)  # padding line\n"


def _stream(data: bytes, chunk: int, name: str = "notes.txt") -> list[tuple[int, str, str]]:
    scanner = StreamScanner(name)
    for i in range(0, len(data), chunk):
        scanner.feed(data[i : i + chunk])
    return [(h.line, h.rule, h.masked) for h in scanner.close()]


def _whole(text: str, name: str = "notes.txt") -> list[tuple[int, str, str]]:
    return [(f.line, f.rule, f.masked) for f in scan_text(text, name)]


def _text_with(secret_line: str, at: int) -> str:
    """Filler lines with ``secret_line`` starting near byte ``at``, then more filler."""
    head = FILLER * (at // len(FILLER))
    return head + secret_line + "\n" + FILLER * ((WINDOW + 3 * OVERLAP) // len(FILLER))


@pytest.mark.parametrize("chunk", [1 << 20, 65_536, 4_093])
@pytest.mark.parametrize("offset", [-40, -8, 0, 8, 40])
def test_a_secret_across_the_window_cut_is_found_once(chunk: int, offset: int) -> None:
    # the first window reports what starts before about WINDOW bytes; the next one starts there
    text = _text_with(f"token = {GH}", WINDOW + offset)
    expected = _whole(text)
    assert [rule for _, rule, _ in expected] == ["github-personal-access-token"]
    assert _stream(text.encode(), chunk) == expected


@pytest.mark.parametrize("shift", [0, 300, 700, 16_000])
def test_a_private_key_block_across_the_cut_is_found(shift: int) -> None:
    text = FILLER * ((WINDOW - shift) // len(FILLER)) + PEM + FILLER * (3 * OVERLAP // 50)
    assert _stream(text.encode(), 65_536) == _whole(text)
    assert [rule for _, rule, _ in _whole(text)] == ["private-key"]


def test_a_line_longer_than_a_window_is_cut_with_context() -> None:
    # minified or generated content: no newline for megabytes
    words = [fake(12, seed=f"w{i}") for i in range(30)]
    body = " ".join(words[i % 30] for i in range(WINDOW // 12))
    cut = WINDOW  # roughly where the first window ends
    text = body[: cut - 20] + f" api_key={ANT} " + body[cut:] + f" {AWS}\n"
    found = _stream(text.encode(), 65_536)
    assert found == _whole(text)
    assert [rule for _, rule, _ in found] == ["anthropic-api-key", "aws-access-key-id"]


def test_multibyte_text_and_line_numbers_match_the_whole_text() -> None:
    text = ("é—ü " * 20 + "\n") * 30_000 + f"clé = '{AWS}'\n" + ("ß\n" * 10)
    assert (
        _stream(text.encode(), 7_777) == _whole(text) == [(30_001, "aws-access-key-id", "AKIA****")]
    )


def test_binary_data_is_read_through_its_printable_strings() -> None:
    data = (
        b"\x89PNG\r\n\x1a\n\0\0\0"
        + bytes(range(256)) * 4
        + f"\0\0aws_access_key_id = {AWS}\0".encode()
        + b"\n\xff\xfe\0"
        + f"token: {GH}".encode()
    )
    found = _stream(data, 100)
    assert [(rule, masked) for _, rule, masked in found] == [
        ("aws-access-key-id", "AKIA****"),
        ("github-personal-access-token", "ghp_****"),
    ]
    assert [line for line, _, _ in found] == [7, 8]  # real newlines counted, NULs are not lines


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16"])
def test_text_stored_as_utf16_is_read(encoding: str) -> None:
    data = f"# config\nkey: {AWS}\n".encode(encoding)
    for prefix in (b"", b"x"):  # either alignment
        assert [rule for _, rule, _ in _stream(prefix + data, 5)] == ["aws-access-key-id"]


def test_a_nul_after_the_first_kilobytes_does_not_hide_what_follows() -> None:
    text = FILLER * 400 + "\0" + f"AWS_KEY = {AWS}\n" + FILLER * 3
    assert [rule for _, rule, _ in _stream(text.encode(), 4096)] == ["aws-access-key-id"]


def test_an_empty_stream_has_no_hits() -> None:
    assert StreamScanner("x").close() == []


def test_mask_text_and_mask_data_hide_every_secret() -> None:
    text = f"deployed with {GH} and\nAWS {AWS}\n{PEM}done"
    masked = mask_text(text)
    for secret in (GH, AWS, PEM.splitlines()[2]):
        assert secret not in masked
    assert "ghp_****" in masked and "AKIA****" in masked and masked.endswith("done")
    assert mask_text("nothing to see") == "nothing to see"
    data = {"summary": f"used {GH}", "gates": [{"output": [AWS, 3]}], "n": 1, "none": None}
    assert mask_data(data) == {
        "summary": "used ghp_****",
        "gates": [{"output": ["AKIA****", 3]}],
        "n": 1,
        "none": None,
    }


_RSS_PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from core.git.secrets import scan_range

    def hwm_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise SystemExit("no VmHWM")

    before = hwm_mib()
    report = asyncio.run(scan_range(Path(sys.argv[1]), "HEAD~1..HEAD", max_blob_bytes=96 << 20))
    print(hwm_mib() - before, report.bytes, [(f.path, f.line, f.rule) for f in report.findings])
    """
)


def test_a_64_mib_file_is_scanned_in_bounded_memory(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    sh("init", "-q", str(repo))
    (repo / "README").write_text("hi\n")
    sh("add", ".", cwd=repo)
    sh("commit", "-qm", "base", cwd=repo)
    block = FILLER.encode() * 20_000  # ~1 MB
    with (repo / "big.log").open("wb") as fh:
        while fh.tell() < 64 << 20:
            fh.write(block)
        lines = fh.tell() // len(FILLER)
        fh.write(f"aws_access_key_id = {AWS}\n".encode())
    sh("add", ".", cwd=repo)
    sh("commit", "-qm", "big", cwd=repo)

    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(repo)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    growth, scanned, findings = probe.stdout.split(" ", 2)
    assert int(scanned) > 64 << 20
    assert findings.strip() == repr([("big.log", lines + 1, "aws-access-key-id")])
    assert float(growth) < 60, f"peak RSS grew by {growth} MiB scanning a 64 MiB file"
