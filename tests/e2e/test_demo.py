"""The offline demo runs the whole flow and every agent ends as planned."""

from __future__ import annotations

from pathlib import Path

import pytest

from mosaic_tui.demo import run_headless_demo
from tests.spine.conftest import make_settings


async def test_demo_runs_offline_with_the_expected_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = make_settings(tmp_path, valkey_url="", sandbox_backend="bwrap")
    assert await run_headless_demo(base) == 0
    out = capsys.readouterr().out
    assert "git.pushed" in out and "secret.detected" in out and "agent.killed" in out
    assert out.count("  ok ") == 4
