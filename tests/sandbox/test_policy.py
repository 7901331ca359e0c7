"""The §9 policy spelled as bwrap options: mount order, masks, validation (argv only, no run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.base import SandboxError, SandboxSpec
from sandbox.policy import build_args, validate_spec


def _spec(tmp_path: Path, **kw: object) -> SandboxSpec:
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    base: dict[str, object] = {
        "agent_id": "a1",
        "argv": ["true"],
        "workdir": wt,
        "env": {"PATH": "/usr/bin"},
        "log_dir": tmp_path / "logs",
    }
    base.update(kw)
    return SandboxSpec(**base)  # type: ignore[arg-type]


def _triples(opts: list[str], flag: str) -> list[tuple[str, str]]:
    return [(opts[i + 1], opts[i + 2]) for i, o in enumerate(opts) if o == flag]


def test_confinement_flags_env_and_chdir(tmp_path: Path) -> None:
    spec = _spec(tmp_path, env={"PATH": "/usr/bin", "HOME": "/tmp"})
    opts = build_args(spec, seccomp_fd=9).options
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                 "--new-session", "--clearenv"):  # fmt: skip
        assert flag in opts
    assert "--share-net" not in opts
    assert opts[opts.index("--cap-drop") + 1] == "ALL"
    assert opts[opts.index("--seccomp") + 1] == "9"
    assert opts[opts.index("--chdir") + 1] == str(spec.workdir)
    assert _triples(opts, "--setenv") == [("PATH", "/usr/bin"), ("HOME", "/tmp")]
    assert opts[opts.index("--clearenv") - 2 : opts.index("--clearenv")] == ["--remount-ro", "/"]
    assert (str(spec.workdir), str(spec.workdir)) in _triples(opts, "--bind")


def test_network_opt_in_shares_the_net_namespace(tmp_path: Path) -> None:
    assert "--share-net" in build_args(_spec(tmp_path, network=True)).options


def test_system_is_read_only_and_home_is_absent(tmp_path: Path) -> None:
    opts = build_args(_spec(tmp_path)).options
    ro = dict(_triples(opts, "--ro-bind"))
    assert "/usr" in ro
    assert "/etc/ld.so.cache" in ro
    binds = [d for _, d in _triples(opts, "--bind")] + list(ro.values())
    for secret in ("/root", "/home", "/etc", "/etc/shadow", "/var", "/run"):
        assert secret not in binds
    if os.path.islink("/bin"):
        assert "--symlink" in opts and opts[opts.index("--symlink") + 2] in (
            "/bin",
            "/sbin",
            "/lib",
        )


def test_mounts_apply_shallowest_first_so_tmp_does_not_cover_a_worktree_in_tmp(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path)
    opts = build_args(spec).options
    tmpfs_at = opts.index("/tmp", opts.index("--tmpfs"))
    assert str(spec.workdir).startswith("/tmp/")
    assert opts.index(str(spec.workdir)) > tmpfs_at


def test_readonly_paths_are_rebound_after_the_writable_worktree(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    hooks = spec.workdir / ".git" / "hooks"
    hooks.mkdir(parents=True)
    missing = spec.workdir / "nope"
    opts = build_args(_spec(tmp_path, readonly_paths=(hooks, missing))).options
    ro = [d for _, d in _triples(opts, "--ro-bind")]
    assert str(hooks) in ro and str(missing) not in ro
    assert opts.index(str(hooks)) > opts.index(str(spec.workdir))


def test_hidden_paths_are_masked_only_when_a_parent_is_bound(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "secret_dir").mkdir(parents=True)
    (shared / "secret_dir" / "inner").mkdir()
    (shared / "secret.txt").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = _spec(
        tmp_path,
        ro_binds=(shared, shared / "secret_dir" / "inner"),
        hidden_paths=(
            shared / "secret_dir",
            shared / "secret.txt",
            elsewhere,
            tmp_path / "does-not-exist",
        ),
    )
    opts = build_args(spec).options
    secret_dir = str(shared / "secret_dir")
    assert secret_dir in [opts[i + 1] for i, o in enumerate(opts) if o == "--tmpfs"]
    assert opts[opts.index(secret_dir) - 3] == "--perms"
    assert ("/dev/null", str(shared / "secret.txt")) in _triples(opts, "--ro-bind")
    assert secret_dir in [opts[i + 1] for i, o in enumerate(opts) if o == "--remount-ro"]
    assert str(elsewhere) not in opts
    # the explicit bind inside the hidden dir comes after the mask
    inner = str(shared / "secret_dir" / "inner")
    assert opts.index(inner) > opts.index(secret_dir)


def test_a_path_both_bound_and_hidden_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(SandboxError, match="both bound"):
        build_args(_spec(tmp_path, ro_binds=(d,), hidden_paths=(d,)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("agent_id", "../escape", "invalid agent id"),
        ("agent_id", "", "invalid agent id"),
        ("argv", [], "argv must be"),
        ("argv", ["ok", ""], "argv must be"),
        ("workdir", Path("relative"), "not an existing absolute directory"),
        ("workdir", Path("/nonexistent/dir"), "not an existing absolute directory"),
        ("memory_mb", 0, "memory_mb must be positive"),
        ("pids_max", 0, "pids_max must be positive"),
        ("cpu_quota", 0.0, "cpu_quota must be positive"),
        ("ro_binds", (Path("/nonexistent/x"),), "ro_binds entry"),
        ("rw_binds", (Path("rel"),), "rw_binds entry"),
        ("readonly_paths", (Path("rel"),), "must be absolute"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(SandboxError, match=message):
        validate_spec(_spec(tmp_path, **{field: value}))


def test_a_valid_spec_passes(tmp_path: Path) -> None:
    validate_spec(_spec(tmp_path, cpu_quota=None))
