"""fl-demo refuses bad input with one line and a non-zero exit, before starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FL_DEMO = str(Path(sys.executable).with_name("fl-demo"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FL_DEMO, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_help_describes_every_option(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in (
        "--scenario",
        "--sites",
        "--rounds",
        "--steps",
        "--learning-rate",
        "--batch-size",
        "--seed",
        "--workdir",
        "--database",
        "--port",
        "--round-timeout",
        "--timeout",
        "--eval-limit",
        "--no-baseline",
        "--mode",
        "--clip",
    ):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scenario", "pharmacies"], "unknown scenario 'pharmacies'"),
        (["--rounds", "0"], "--rounds must be between"),
        (["--scenario", "heart", "--sites", "9"], "heart"),
        (["--database", "nosuchdialect://x"], "nosuchdialect"),
        (["--database", "sqlite:////nonexistent/dir/registry.db"], "registry"),
        (["--database", "postgresql://u:secret@127.0.0.1:1/x"], "unavailable"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run("--workdir", str(tmp_path / "w"), *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fl-demo: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
