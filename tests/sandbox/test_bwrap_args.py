"""The bwrap argv builder: what each method spells, and the input it refuses."""

from __future__ import annotations

import pytest

from sandbox.base import SandboxError
from sandbox.bwrap_args import BwrapArgs


def test_options_are_spelled_in_call_order_before_the_command() -> None:
    args = (
        BwrapArgs(binary="/usr/bin/bwrap")
        .unshare_all()
        .unshare_user()
        .disable_userns()
        .die_with_parent()
        .new_session()
        .cap_drop_all()
        .ro_bind("/usr")
        .symlink("usr/bin", "/bin")
        .proc()
        .dev()
        .tmpfs("/tmp", perms=0o1777, size=1 << 20)
        .bind("/src", "/dest")
        .remount_ro("/")
        .clearenv()
        .setenv("PATH", "/usr/bin")
        .unsetenv("OLD")
        .chdir("/dest")
    )
    assert args.argv(["sh", "-c", "echo hi"]) == [
        "/usr/bin/bwrap",
        "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
        "--new-session", "--cap-drop", "ALL",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "1777", "--size", "1048576", "--tmpfs", "/tmp",
        "--bind", "/src", "/dest",
        "--remount-ro", "/",
        "--clearenv", "--setenv", "PATH", "/usr/bin", "--unsetenv", "OLD",
        "--chdir", "/dest",
        "--", "sh", "-c", "echo hi",
    ]  # fmt: skip


def test_try_variants_dev_bind_dir_hostname_uid_share_net() -> None:
    args = (
        BwrapArgs()
        .ro_bind("/opt/x", try_=True)
        .bind("/a", "/b", try_=True)
        .dev_bind("/dev/kvm")
        .dir("/work", perms=0o755)
        .hostname("box")
        .uid(1000, 1000)
        .uid(0)
        .share_net()
    )
    assert args.options == [
        "--ro-bind-try", "/opt/x", "/opt/x",
        "--bind-try", "/a", "/b",
        "--dev-bind", "/dev/kvm", "/dev/kvm",
        "--perms", "0755", "--dir", "/work",
        "--hostname", "box",
        "--uid", "1000", "--gid", "1000", "--uid", "0",
        "--share-net",
    ]  # fmt: skip


def test_seccomp_fd_is_passed_and_not_repeatable() -> None:
    args = BwrapArgs().seccomp(7)
    assert args.options == ["--seccomp", "7"]
    assert args.pass_fds == [7]
    with pytest.raises(SandboxError, match="one --seccomp"):
        args.seccomp(8)
    with pytest.raises(SandboxError, match="invalid seccomp fd"):
        BwrapArgs().seccomp(-1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.bind("relative/path"), "must be absolute"),
        (lambda a: a.ro_bind("/ok", "dest"), "must be absolute"),
        (lambda a: a.chdir("/x\0y"), "NUL"),
        (lambda a: a.setenv("BAD-NAME", "v"), "invalid environment variable name"),
        (lambda a: a.setenv("1X", "v"), "invalid environment variable name"),
        (lambda a: a.unsetenv("A B"), "invalid environment variable name"),
        (lambda a: a.setenv("OK", "a\0b"), "NUL"),
        (lambda a: a.tmpfs("/t", size=0), "size must be positive"),
        (lambda a: a.tmpfs("/t", perms=0o17777), "invalid permissions"),
        (lambda a: a.uid(-1), "uid/gid"),
        (lambda a: a.argv([]), "empty command"),
        (lambda a: a.argv(["echo", "a\0b"]), "NUL"),
    ],
)
def test_bad_input_is_a_clear_sandbox_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SandboxError, match=message):
        call(BwrapArgs())
