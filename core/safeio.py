"""Reading files an agent controls, safely (SPEC §16, bounded host resources).

An agent owns every file in its worktree and in its private I/O directory: any of them may be a
symbolic link to a host file, a FIFO that never delivers a byte, a device, or a sparse file of
terabytes. Everything the orchestrator reads from those places goes through this module, which

- never follows a symbolic link: ``O_NOFOLLOW`` on the file itself and, when a trusted ``root``
  is given, on every directory between ``root`` and the file (each opened relative to its
  parent's descriptor, so a directory swapped for a link while we walk is refused too);
- opens with ``O_NONBLOCK`` (a FIFO cannot hang us) and reads only a regular file (``fstat``);
- never reads more than the caller's cap: a larger file is refused (``read_capped``) or only its
  end is read (``read_tail``, ``copy_tail``), in chunks of at most 1 MiB.

A missing file is ``None``; any other reason not to read it raises :class:`RefusedFile`, whose
message says why (``"pyproject.toml: a symbolic link (not followed)"``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

MiB = 1024 * 1024
CHUNK = MiB

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_MISSING = (errno.ENOENT, errno.ENOTDIR)


class RefusedFile(Exception):
    """An untrusted file the orchestrator will not read: the message says why."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name = name
        self.why = why


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB and n % (MiB // 4) == 0 else f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (not followed)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


def _why_not(name: str, dir_fd: int | None, err: OSError) -> RefusedFile | None:
    """Why opening ``name`` failed: None when it simply does not exist."""
    try:
        link = stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        link = False
    if link or err.errno == errno.ELOOP:
        return RefusedFile(name, "a symbolic link (not followed)")
    if err.errno in _MISSING:
        return None
    return RefusedFile(name, err.strerror or str(err))


def _parts(path: Path | str, root: Path | None) -> tuple[list[str], str]:
    p = PurePosixPath(path)
    if root is not None and p.is_absolute():
        try:
            p = p.relative_to(PurePosixPath(root))
        except ValueError:
            raise RefusedFile(str(path), f"not under {root}") from None
    if root is not None and any(part in ("..", "/") for part in p.parts):
        raise RefusedFile(str(path), "a path leaving its directory")
    parts = list(p.parts)
    if not parts:
        raise RefusedFile(str(path), "not a file name")
    return parts, str(p)


def open_untrusted(path: Path | str, *, root: Path | None = None) -> int | None:
    """A read-only descriptor of the regular file ``path``; None when it does not exist.

    With ``root`` (a trusted directory; ``path`` relative to it, or absolute under it), no
    directory between ``root`` and the file may be a symbolic link either. The caller closes
    the descriptor. Raises :class:`RefusedFile` for a link, a non-regular file, or an error.
    """
    parts, shown = _parts(path, root)
    dir_fd: int | None = None
    try:
        if root is not None:
            try:
                dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno in _MISSING:
                    return None
                raise RefusedFile(str(root), exc.strerror or str(exc)) from None
            for i, part in enumerate(parts[:-1]):
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    refused = _why_not(part, dir_fd, exc)
                    if refused is None:
                        return None
                    where = "/".join(parts[: i + 1])
                    if refused.why.startswith("a symbolic link"):
                        why = f"{where} is a symbolic link (not followed)"
                        raise RefusedFile(shown, why) from None
                    raise RefusedFile(shown, f"{where}: {refused.why}") from None
                os.close(dir_fd)
                dir_fd = fd
            name = parts[-1]
        else:
            name = str(path)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            refused = _why_not(name, dir_fd, exc)
            if refused is None:
                return None
            raise RefusedFile(shown, refused.why) from None
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise RefusedFile(shown, _kind(mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_upto(fd: int, limit: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < limit:
        chunk = os.pread(fd, min(CHUNK, limit - got), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_capped(path: Path | str, max_bytes: int, *, root: Path | None = None) -> bytes | None:
    """The whole content of ``path`` if it holds at most ``max_bytes``; None if missing.

    A larger file is refused (:class:`RefusedFile`), without reading it.
    """
    fd = open_untrusted(path, root=root)
    if fd is None:
        return None
    try:
        if os.fstat(fd).st_size > max_bytes:
            raise RefusedFile(str(path), f"larger than {_size(max_bytes)}")
        data = _read_upto(fd, max_bytes + 1, 0)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while we read
        raise RefusedFile(str(path), f"larger than {_size(max_bytes)}")
    return data


def read_text_capped(path: Path | str, max_bytes: int, *, root: Path | None = None) -> str | None:
    """``read_capped`` decoded as UTF-8; a file that is not UTF-8 is refused."""
    data = read_capped(path, max_bytes, root=root)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RefusedFile(str(path), f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def read_tail(path: Path | str, max_bytes: int, *, root: Path | None = None) -> bytes | None:
    """The last ``max_bytes`` of ``path`` (all of it when smaller); None if missing."""
    fd = open_untrusted(path, root=root)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        return _read_upto(fd, max_bytes, max(0, size - max_bytes))
    finally:
        os.close(fd)


def copy_tail(
    src: Path | str,
    dst: Path,
    max_bytes: int,
    *,
    root: Path | None = None,
    whole_lines: bool = False,
) -> int | None:
    """Copy at most the last ``max_bytes`` of ``src`` to ``dst``; the bytes copied, or None.

    None (and ``dst`` untouched) when ``src`` does not exist. With ``whole_lines``, a copy that
    had to drop the beginning starts after the first newline of what it kept, so a JSON-lines
    file stays one record a line. ``dst`` (trusted place) is replaced, never followed if a link.
    """
    fd = open_untrusted(src, root=root)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        offset = max(0, size - max_bytes)
        end = offset + max_bytes
        if whole_lines and offset > 0:
            offset = _after_newline(fd, offset, end)
        out = os.open(
            dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640
        )
        copied = 0
        try:
            while offset + copied < end:
                chunk = os.pread(fd, min(CHUNK, end - offset - copied), offset + copied)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
                copied += len(chunk)
        finally:
            os.close(out)
        return copied
    finally:
        os.close(fd)


def _after_newline(fd: int, offset: int, end: int) -> int:
    while offset < end:
        chunk = os.pread(fd, min(CHUNK, end - offset), offset)
        if not chunk:
            return end
        at = chunk.find(b"\n")
        if at >= 0:
            return offset + at + 1
        offset += len(chunk)
    return end
