"""A small seccomp filter for bwrap's ``--seccomp FD``, compiled to classic BPF in pure Python.

Defence in depth on top of the namespaces and dropped capabilities. It refuses (EPERM):

- ``ioctl(TIOCSTI)`` and ``ioctl(TIOCLINUX)``: pushing keystrokes into a terminal;
- a setuid or setgid bit by any route: ``chmod``/``fchmod``/``fchmodat``/``fchmodat2`` with it,
  ``open``/``openat``/``creat`` creating a file with it (``O_CREAT`` or ``O_TMPFILE``),
  ``mknod``/``mknodat`` with it; ``openat2`` (whose mode hides in a struct) is refused with ENOSYS,
  so libc falls back to ``openat``. An agent must not leave a set-id binary for the host to run;
- ``add_key``/``request_key``/``keyctl``: the kernel keyring is not namespaced;
- ``io_uring_setup``/``io_uring_enter``/``io_uring_register``: a second syscall path that seccomp
  cannot see into, and a steady source of kernel bugs;
- new user namespaces: ``unshare`` and ``clone`` with ``CLONE_NEWUSER``; ``clone3`` (flags in a
  struct) gets ENOSYS so libc falls back to ``clone``.

Syscalls of another ABI (x32, i386 on x86-64) are refused with ENOSYS so the rules cannot be
bypassed through a second syscall table. Everything else is allowed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import struct
from dataclasses import dataclass

from sandbox.base import SandboxError

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_AARCH64 = 0xC00000B7
_X32_SYSCALL_BIT = 0x40000000

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06

# Offsets in struct seccomp_data.
_NR = 0
_ARCH = 4


def _arg_lo(i: int) -> int:
    """Offset of the low 32 bits of syscall argument ``i`` (little-endian)."""
    return 16 + 8 * i


TIOCSTI = 0x5412
TIOCLINUX = 0x541C
SET_ID_BITS = 0o6000
O_CREAT = 0o100
O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE
CLONE_NEWUSER = 0x10000000
IO_URING = (425, 426, 427)  # io_uring_setup, io_uring_enter, io_uring_register (all arches)
OPENAT2 = 437
CLONE3 = 435


@dataclass(frozen=True)
class _Syscalls:
    arch: int
    ioctl: int
    mode_arg1: tuple[int, ...]  # chmod(path, mode), fchmod(fd, mode), creat(path, mode), mknod
    mode_arg2: tuple[int, ...]  # fchmodat(dfd, path, mode[, flags]), mknodat(dfd, path, mode)
    open_flags1: tuple[int, ...]  # open(path, flags, mode)
    open_flags2: tuple[int, ...]  # openat(dfd, path, flags, mode)
    keyring: tuple[int, ...]
    userns_arg0: tuple[int, ...]  # unshare(flags), clone(flags, ...)
    x32_bit: bool


_TABLES = {
    "x86_64": _Syscalls(
        arch=AUDIT_ARCH_X86_64,
        ioctl=16,
        mode_arg1=(90, 91, 85, 133),
        mode_arg2=(268, 452, 259),
        open_flags1=(2,),
        open_flags2=(257,),
        keyring=(248, 249, 250),
        userns_arg0=(272, 56),
        x32_bit=True,
    ),
    "aarch64": _Syscalls(
        arch=AUDIT_ARCH_AARCH64,
        ioctl=29,
        mode_arg1=(52,),
        mode_arg2=(53, 452, 33),
        open_flags1=(),
        open_flags2=(56,),
        keyring=(217, 218, 219),
        userns_arg0=(97, 220),
        x32_bit=False,
    ),
}


class _Asm:
    """A tiny assembler for forward jumps to named labels."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int, str | None, str | None]] = []
        self.labels: dict[str, int] = {}

    def ld(self, offset: int) -> None:
        self.code.append((_LD_W_ABS, offset, None, None))

    def jump(self, op: int, k: int, true: str | None, false: str | None = None) -> None:
        self.code.append((op, k, true, false))

    def ret(self, value: int) -> None:
        self.code.append((_RET_K, value, None, None))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for i, (op, k, true, false) in enumerate(self.code):
            jt = self.labels[true] - i - 1 if true else 0
            jf = self.labels[false] - i - 1 if false else 0
            if not (0 <= jt <= 255 and 0 <= jf <= 255):  # pragma: no cover - tiny program
                raise SandboxError("seccomp program too large")
            out += struct.pack("<HBBI", op, jt, jf, k)
        return bytes(out)


def build_filter(machine: str | None = None) -> bytes:
    """The compiled filter for ``machine`` (default: this host's ``platform.machine()``)."""
    name = machine or platform.machine()
    table = _TABLES.get(name)
    if table is None:
        raise SandboxError(f"no seccomp filter for architecture {name!r}")
    a = _Asm()
    a.ld(_ARCH)
    a.jump(_JEQ_K, table.arch, None, "enosys")
    a.ld(_NR)
    if table.x32_bit:
        a.jump(_JGE_K, _X32_SYSCALL_BIT, "enosys")
    a.jump(_JEQ_K, table.ioctl, "ioctl")
    for nr in table.mode_arg1:
        a.jump(_JEQ_K, nr, "mode1")
    for nr in table.mode_arg2:
        a.jump(_JEQ_K, nr, "mode2")
    for nr in table.open_flags1:
        a.jump(_JEQ_K, nr, "open1")
    for nr in table.open_flags2:
        a.jump(_JEQ_K, nr, "open2")
    for nr in table.userns_arg0:
        a.jump(_JEQ_K, nr, "userns")
    for nr in (*table.keyring, *IO_URING):
        a.jump(_JEQ_K, nr, "eperm")
    for nr in (OPENAT2, CLONE3):
        a.jump(_JEQ_K, nr, "enosys")
    a.ret(SECCOMP_RET_ALLOW)
    # open(path, flags, mode): a set-id mode only matters when the call creates a file
    a.label("open1")
    a.ld(_arg_lo(1))
    a.jump(_JSET_K, O_CREAT | O_TMPFILE_BIT, "mode2", None)
    a.ret(SECCOMP_RET_ALLOW)
    a.label("open2")
    a.ld(_arg_lo(2))
    a.jump(_JSET_K, O_CREAT | O_TMPFILE_BIT, "mode3", None)
    a.ret(SECCOMP_RET_ALLOW)
    a.label("mode3")
    a.ld(_arg_lo(3))
    a.jump(_JSET_K, SET_ID_BITS, "eperm")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("userns")
    a.ld(_arg_lo(0))
    a.jump(_JSET_K, CLONE_NEWUSER, "eperm")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("ioctl")
    a.ld(_arg_lo(1))
    a.jump(_JEQ_K, TIOCSTI, "eperm")
    a.jump(_JEQ_K, TIOCLINUX, "eperm")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("mode1")
    a.ld(_arg_lo(1))
    a.jump(_JSET_K, SET_ID_BITS, "eperm")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("mode2")
    a.ld(_arg_lo(2))
    a.jump(_JSET_K, SET_ID_BITS, "eperm")
    a.ret(SECCOMP_RET_ALLOW)
    a.label("eperm")
    a.ret(SECCOMP_RET_ERRNO | errno.EPERM)
    a.label("enosys")
    a.ret(SECCOMP_RET_ERRNO | errno.ENOSYS)
    return a.assemble()


def data_fd(text: str) -> int:
    """An fd (memfd, positioned at 0) holding ``text``, for bwrap's ``--ro-bind-data``."""
    return filter_fd(text.encode(), name="mosaic-data")


def filter_fd(program: bytes, *, name: str = "mosaic-seccomp") -> int:
    """An fd (memfd, positioned at 0) holding ``program``; the caller closes it after spawn."""
    fd = os.memfd_create(name, 0)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:  # pragma: no cover - memfd write of a few hundred bytes
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
