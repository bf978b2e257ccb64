"""`fl-demo --resume` finds the workdir's run that is still running, or says there is none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedseal.demo.run import run_to_resume
from fedseal.registry import open_registry

FL_DEMO = str(Path(sys.executable).with_name("fl-demo"))


def test_resume_without_a_running_run_says_so_and_starts_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [FL_DEMO, "--workdir", str(tmp_path / "demo"), "--resume", "--no-baseline"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "FEDSEAL_DATABASE_URL": ""},
    )
    assert done.returncode != 0
    assert "no run in this workdir's registry is still running" in done.stdout + done.stderr
    assert not (tmp_path / "demo" / "logs").exists()


def test_resume_picks_the_newest_running_run(tmp_path: Path) -> None:
    registry = open_registry(
        f"sqlite:///{tmp_path / 'registry.db'}", ledger_key=Ed25519PrivateKey.generate()
    )
    started = [
        registry.start_run(scenario="hospitals", protocol_mode="he+ss", config={}, rounds_planned=3)
        for _ in range(3)
    ]
    registry.finish_run(started[2], status="completed")
    assert run_to_resume(registry) == started[1]
