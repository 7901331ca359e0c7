"""Helpers to run an attack script inside a sandbox and read what each attempt did."""

from __future__ import annotations

import json
from typing import Any

PRELUDE = """
import json, os, sys
R = {}
def t(name, fn, *a):
    try:
        v = fn(*a)
        R[name] = "ok" if v is None else v
    except BaseException as e:
        R[name] = "ERR " + type(e).__name__ + ": " + str(e)
def write(path, text="pwned", mode="w"):
    with open(path, mode) as f:
        f.write(text)
def read(path):
    with open(path) as f:
        return "READ " + f.read()
def sys(nr, *args):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(nr, *args)
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
"""


def script(body: str) -> str:
    return PRELUDE + body + "\nprint(json.dumps(R))\n"


def results(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.strip().splitlines() if line.startswith("{")]
    assert lines, f"attack script printed no results: {stdout!r}"
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def failed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("ERR ")
