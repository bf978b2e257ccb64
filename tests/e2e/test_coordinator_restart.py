"""End-to-end: the SuperLink (and with it the ServerApp) killed mid-round and restarted.

Real processes: a SuperLink on TLS with SuperNode authentication and a state database, three
sites, and the operator's `fl-coordinator start-run --wait`. The SuperLink is SIGKILLed in
round 2 and started again, as compose's `restart: on-failure` does. start-run notices that the
run lost its coordinator and continues it from the registry: round 2 is recorded aborted, the
continuation trains the remaining round, no ledger entry is lost or written twice, and the
ledger verifies.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from fedseal.demo.federation import LocalFederation
from fedseal.models.data import scenario_site_names
from fedseal.registry import open_registry
from fedseal.registry.ledger_key import create_ledger_key

pytestmark = pytest.mark.e2e

FL_COORDINATOR = str(Path(sys.executable).with_name("fl-coordinator"))
FL_AUDIT = str(Path(sys.executable).with_name("fl-audit"))


def test_a_killed_superlink_is_restarted_and_the_run_continues(tmp_path: Path) -> None:
    sites = scenario_site_names("hospitals", 3)
    state = tmp_path / "coordinator"
    ledger_key, _ = create_ledger_key(state)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = open_registry(url, ledger_key=ledger_key)
    federation = LocalFederation(
        workdir=tmp_path,
        scenario="hospitals",
        sites=sites,
        registry=registry,
        max_eval_examples=16,
        dp={site: {"epsilon": 50.0, "noise_multiplier": 1.0} for site in sites},
        tls=True,
    )
    federation.enroll_sites()
    start_run = None
    try:
        federation.start_superlink()
        federation.register_node_keys()
        for site in sites:
            federation.start_site(site)
        log = (tmp_path / "start-run.log").open("w")
        start_run = subprocess.Popen(
            [
                FL_COORDINATOR,
                "start-run",
                "--wait",
                # the restart is what is tested: LoRA sites start training at once, while the
                # head adapter's first round embeds every record (longer than the 60 s timeout)
                "--adapter",
                "lora",
                "--rounds",
                "3",
                "--steps",
                "2",
                "--round-timeout",
                "60",
                "--state",
                str(state),
                "--database",
                url,
                "--flwr-home",
                str(federation.flwr_home),
                "--timeout",
                "900",
            ],
            env=federation.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 600
        while not any(
            r.number == 2 for run in registry.list_runs() for r in registry.rounds(run.id)
        ):
            assert start_run.poll() is None, (tmp_path / "start-run.log").read_text()
            assert time.monotonic() < deadline, "round 2 never started"
            time.sleep(0.5)
        time.sleep(2.0)  # mid-round
        federation.processes.stop("superlink", grace_s=0.0, sig=signal.SIGKILL)
        time.sleep(2.0)
        federation.start_superlink()  # what `restart: on-failure` does
        assert start_run.wait(timeout=900) == 0, (tmp_path / "start-run.log").read_text()
    finally:
        if start_run is not None and start_run.poll() is None:
            start_run.kill()
        federation.stop()

    output = (tmp_path / "start-run.log").read_text()
    assert "lost its coordinator" in output and "continuing it" in output
    first, second = sorted(registry.list_runs(), key=lambda run: run.id)
    assert str(first.status) == "aborted" and f"continued as run {second.id}" in first.error
    assert str(second.status) == "completed"
    rounds = {r.number: r for run in (first, second) for r in registry.rounds(run.id)}
    assert str(rounds[1].status) == "completed"
    assert str(rounds[2].status) == "aborted"
    assert str(rounds[3].status) == "completed" and rounds[3].participants == 3
    # every (site, run, round) is in the ledger at most once; nothing is charged twice
    entries = [
        (entry.site, entry.run_id, entry.round_number)
        for run in (first, second)
        for entry in registry.privacy_ledger(run_id=run.id)
    ]
    assert entries and max(Counter(entries).values()) == 1
    audit = subprocess.run(
        [
            FL_AUDIT,
            "verify",
            "--database",
            url,
            "--coordinator-key",
            str(state / "keys" / "ledger-public-key.hex"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
