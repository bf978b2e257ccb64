"""The registry's database goes away for a while: the coordinator waits, retries, loses nothing.

The PostgreSQL test starts a private server (initdb/pg_ctl in a temporary folder, on a free
port), so stopping it disturbs no other test; it is skipped where PostgreSQL's server binaries
are not installed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedseal.audit.verify import verify_database
from fedseal.contract import ledger_codec
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.registry import (
    RecordConflict,
    RegistryUnavailable,
    open_registry,
)
from fedseal.registry.errors import AlreadyFinished
from fedseal.registry.retry import RetryingRegistry, RetryPolicy

SITES = ("hospital_a", "hospital_b", "hospital_c")
EVENT = DpEvent(1.1, 32 / 600, 5)
DELTA = 1e-5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _policy(clock: FakeClock, messages: list[str], give_up: float = 60.0) -> RetryPolicy:
    return RetryPolicy(give_up, sleep=clock.sleep, clock=clock, report=messages.append)


def test_transient_failures_are_retried_with_a_visible_message() -> None:
    clock, messages, calls = FakeClock(), [], []

    def flaky() -> str:
        calls.append(clock.now)
        if len(calls) < 4:
            raise RegistryUnavailable("db down", transient=True)
        return "done"

    assert _policy(clock, messages).call("finish_round", flaky) == "done"
    assert calls == [0.0, 1.0, 3.0, 7.0]  # waits of 1, 2, 4 s
    assert len(messages) == 3
    assert messages[0].startswith("registry unavailable, retrying in 1 s (finish_round;")


def test_permanent_failures_and_a_long_outage_are_not_hidden() -> None:
    clock, messages = FakeClock(), []

    def bad_url() -> None:
        raise RegistryUnavailable("not a valid database URL")

    with pytest.raises(RegistryUnavailable, match="not a valid"):
        _policy(clock, messages).call("open", bad_url)
    assert messages == []

    def down() -> None:
        raise RegistryUnavailable("db down", transient=True)

    with pytest.raises(RegistryUnavailable, match="db down"):
        _policy(clock, messages, give_up=20.0).call("start_round", down)
    assert clock.now == pytest.approx(20.0)  # waited until the deadline, not beyond


def test_a_write_that_committed_before_the_connection_dropped_is_not_repeated() -> None:
    """The first try committed but reported the connection lost; the retry's duplicate error
    means "already done" for the coordinator's non-idempotent writes."""
    calls: list[str] = []

    class Inner:
        def finish_round(self, round_id: int, **kwargs: object) -> None:
            calls.append("finish_round")
            if len(calls) == 1:
                raise RegistryUnavailable("connection lost during commit", transient=True)
            raise AlreadyFinished(f"round {round_id} already finished as completed")

    clock, messages = FakeClock(), []
    registry = RetryingRegistry(Inner(), _policy(clock, messages))  # type: ignore[arg-type]
    registry.finish_round(7, status="completed")
    assert calls == ["finish_round", "finish_round"]

    class Fresh:
        def finish_round(self, round_id: int, **kwargs: object) -> None:
            raise AlreadyFinished(f"round {round_id} already finished as aborted")

    with pytest.raises(RecordConflict):  # without a failed try first, a conflict is real
        RetryingRegistry(Fresh(), _policy(clock, messages)).finish_round(7, status="completed")  # type: ignore[arg-type]


# -- a real PostgreSQL server, stopped and started under the coordinator's writes ---------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateServer:
    """A PostgreSQL cluster of our own, run as the `postgres` user when we are root."""

    def __init__(self, bindir: Path, folder: Path) -> None:
        self.bindir = bindir
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.port = _free_port()
        self.folder = folder
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self.prefix, *args], check=False, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, args[0], done.stdout, done.stderr)

    def init(self) -> None:
        if self.prefix:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    # not under pytest's 0700 temporary root: the server runs as another user
    folder = Path(tempfile.mkdtemp(prefix="fedseal-pg-"))
    server = PrivateServer(Path(found[-1]).parent, folder)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_postgres_stopped_and_started_during_rounds_keeps_the_chain_whole(
    private_postgres: PrivateServer, ledger_key, site_signer
) -> None:
    """A writer records six rounds (start, three signed ledger entries, contributions,
    finish) while the server is stopped for a few seconds and started again: it waits with
    a visible message, and afterwards every round and entry is there exactly once and the
    chain verifies with fl-audit's checks."""
    messages: list[str] = []
    policy = RetryPolicy(120.0, first_wait_s=0.5, max_wait_s=2.0, report=messages.append)
    inner = open_registry(private_postgres.url, ledger_key=ledger_key)
    registry = RetryingRegistry(inner, policy)
    site_signer.enroll(inner, *SITES)
    run_id = registry.start_run(
        scenario="hospitals", protocol_mode="he+ss", config={}, rounds_planned=6,
        flower_run_id="777",
    )  # fmt: skip
    two_done, failures = threading.Event(), []

    def coordinator() -> None:
        history: list[DpEvent] = []
        try:
            for number in range(1, 7):
                round_id = registry.start_round(run_id, number, SITES)
                history.append(EVENT)
                for site in SITES:
                    digest = ledger_codec.update_digest(f"{site} {number}".encode())
                    registry.record_privacy(
                        **site_signer.signed(
                            inner, run_id=run_id, round_number=number, site=site,
                            update_digest=digest, status="charged",
                            noise_multiplier=EVENT.noise_multiplier,
                            sample_rate=EVENT.sample_rate, steps=EVENT.steps,
                            max_grad_norm=1.0, delta=DELTA, accountant="rdp",
                            epsilon_round=epsilon_of([EVENT], DELTA, Accountant.RDP),
                            epsilon_cumulative=epsilon_of(history, DELTA, Accountant.RDP),
                            budget=50.0,
                        )
                    )  # fmt: skip
                    registry.record_contribution(
                        round_id, site, status="contributed", update_digest=digest
                    )
                registry.finish_round(round_id, status="completed")
                if number == 2:
                    two_done.set()
                    time.sleep(0.5)  # let the outage begin while round 3 is being written
            registry.finish_run(run_id, status="completed")
        except BaseException as exc:  # reported to the test thread
            failures.append(exc)

    writer = threading.Thread(target=coordinator)
    writer.start()
    assert two_done.wait(120)
    private_postgres.stop()
    time.sleep(4.0)
    private_postgres.start()
    writer.join(180)
    assert not writer.is_alive() and not failures, failures

    assert any(m.startswith("registry unavailable, retrying in") for m in messages), messages
    rounds = inner.rounds(run_id)
    assert [(r.number, str(r.status), r.participants) for r in rounds] == [
        (n, "completed", 3) for n in range(1, 7)
    ]
    ledger = inner.privacy_ledger(run_id=run_id)
    assert sorted((e.round_number, e.site) for e in ledger) == [
        (n, s) for n in range(1, 7) for s in SITES
    ]
    assert str(inner.get_run(run_id).status) == "completed"
    inner.close()
    _snapshot, result = verify_database(private_postgres.url)
    assert not result.findings, [str(f) for f in result.findings]
    seqs = [entry.seq for entry in _snapshot.chain]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
