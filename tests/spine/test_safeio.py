"""Reading agent-controlled files: no link followed, no FIFO waited on, no unbounded read."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.logtail import last_line, tail_lines
from core.safeio import MiB, RefusedFile, copy_tail, read_capped, read_tail, read_text_capped


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("HOST-ONLY-SECRET\n")
    return secret


def finishes(call: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Run ``call`` in a thread; fail (instead of hanging the suite) if it blocks."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(_outcome(call)), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the read blocked"
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except BaseException as exc:  # handed to the test's thread
        return exc


def test_regular_file_is_read_and_missing_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("x = 1\n")
    assert read_capped(tmp_path / "a.toml", 100) == b"x = 1\n"
    assert read_text_capped("a.toml", 100, root=tmp_path) == "x = 1\n"
    assert read_capped(tmp_path / "missing", 100) is None
    assert read_capped("sub/missing", 100, root=tmp_path) is None
    assert read_capped("a.toml/below", 100, root=tmp_path) is None  # a file is no directory


def test_symlinked_file_is_refused(tmp_path: Path, host_secret: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").symlink_to(host_secret)
    with pytest.raises(RefusedFile, match="symbolic link"):
        read_capped(work / "pyproject.toml", MiB)
    with pytest.raises(RefusedFile, match="symbolic link"):
        read_capped("pyproject.toml", MiB, root=work)
    # a link to a file inside the same directory is refused too: links are never followed
    (work / "real.toml").write_text("x = 1\n")
    (work / "alias.toml").symlink_to("real.toml")
    with pytest.raises(RefusedFile, match="symbolic link"):
        read_capped("alias.toml", MiB, root=work)


def test_symlinked_directory_below_root_is_refused(tmp_path: Path, host_secret: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / ".mosaic").symlink_to(host_secret.parent)
    with pytest.raises(RefusedFile, match=r"\.mosaic is a symbolic link"):
        read_capped(Path(".mosaic") / "secret.txt", MiB, root=work)
    with pytest.raises(RefusedFile, match=r"\.mosaic is a symbolic link"):
        read_capped(work / ".mosaic" / "secret.txt", MiB, root=work)  # absolute under root
    with pytest.raises(RefusedFile, match="leaving"):
        read_capped("../host/secret.txt", MiB, root=work)


def test_fifo_device_and_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")  # no writer: a blocking open would wait forever
    with pytest.raises(RefusedFile, match="FIFO"):
        finishes(lambda: read_capped(tmp_path / "pipe", MiB))
    with pytest.raises(RefusedFile, match="FIFO"):
        finishes(lambda: read_tail(tmp_path / "pipe", MiB))
    with pytest.raises(RefusedFile, match="device"):
        read_capped("/dev/zero", MiB)
    with pytest.raises(RefusedFile, match="directory"):
        read_capped(tmp_path, MiB)


def test_file_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as fh:
        fh.truncate(256 * MiB)  # sparse: reading it whole would cost 256 MiB of memory
    with pytest.raises(RefusedFile, match="larger than 1 MiB"):
        read_capped(big, MiB)
    assert read_tail(big, 10) == b"\0" * 10


def test_non_utf8_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "latin.toml").write_bytes(b"name = '\xe9'\n")
    with pytest.raises(RefusedFile, match="not UTF-8"):
        read_text_capped(tmp_path / "latin.toml", MiB)


def test_copy_tail_keeps_whole_last_lines(tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_bytes(b"".join(b'{"n": %d}\n' % i for i in range(100_000)))
    dst = tmp_path / "copy.jsonl"
    copied = copy_tail(src, dst, 64 * 1024, whole_lines=True)
    data = dst.read_bytes()
    assert copied == len(data) <= 64 * 1024
    assert data.startswith(b'{"n": ') and data.endswith(b'{"n": 99999}\n')
    # a small file is copied whole; a missing one leaves the target alone
    src.write_bytes(b"one\ntwo\n")
    assert copy_tail(src, dst, MiB) == 8 and dst.read_bytes() == b"one\ntwo\n"
    assert copy_tail(tmp_path / "missing", dst, MiB) is None and dst.exists()


def test_copy_tail_refuses_a_link_and_never_writes_through_one(
    tmp_path: Path, host_secret: Path
) -> None:
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    (io_dir / "transcript.jsonl").symlink_to(host_secret)
    with pytest.raises(RefusedFile, match="symbolic link"):
        copy_tail("transcript.jsonl", tmp_path / "out", MiB, root=io_dir)
    assert not (tmp_path / "out").exists()
    (io_dir / "transcript.jsonl").unlink()
    (io_dir / "transcript.jsonl").write_text("fine\n")
    (tmp_path / "out").symlink_to(host_secret)
    with pytest.raises(OSError):
        copy_tail("transcript.jsonl", tmp_path / "out", MiB, root=io_dir)
    assert host_secret.read_text() == "HOST-ONLY-SECRET\n"


def test_log_tail_ignores_links_and_fifos(tmp_path: Path, host_secret: Path) -> None:
    (tmp_path / "stdout.log").symlink_to(host_secret)
    assert tail_lines(tmp_path / "stdout.log") == []
    os.mkfifo(tmp_path / "stderr.log")
    assert finishes(lambda: last_line(tmp_path / "stderr.log")) is None
    (tmp_path / "real.log").write_text("first\n" + "x" * 200_000 + "\nlast line\n")
    assert last_line(tmp_path / "real.log") == "last line"
