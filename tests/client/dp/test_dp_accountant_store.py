"""The site's accountant state: Opacus' ε for every step, persisted, idempotent, never reset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedseal.client.dp.accountant_store import STORE_RELATIVE_PATH, AccountantStore
from fedseal.client.dp.errors import AccountantStoreError, DoubleCharge
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import PRV_EPS_ERROR, epsilon_of
from fedseal.privacy.events import DpEvent, merge_events

DELTA = 1e-5
ROUND = DpEvent(1.1, 32 / 600, 20)


def _stepped(kind: type, events: list[DpEvent]):
    """An Opacus accountant charged one step at a time, as a PrivacyEngine would."""
    accountant = kind()
    for event in events:
        for _ in range(event.steps):
            accountant.step(noise_multiplier=event.noise_multiplier, sample_rate=event.sample_rate)
    return accountant


def test_events_validate_and_merge() -> None:
    with pytest.raises(ValueError):
        DpEvent(0.0, 0.1, 1)
    with pytest.raises(ValueError):
        DpEvent(1.0, 1.5, 1)
    with pytest.raises(ValueError):
        DpEvent(1.0, 0.1, 0)
    with pytest.raises(TypeError):
        DpEvent(1.0, 0.1, 2.0)  # type: ignore[arg-type]
    a, b = DpEvent(1.0, 0.1, 3), DpEvent(2.0, 0.1, 4)
    assert merge_events([a, a, b, a]) == [DpEvent(1.0, 0.1, 6), b, a]


@pytest.mark.parametrize("kind", [Accountant.RDP, Accountant.PRV])
def test_epsilon_is_opacus_for_all_steps_composed(kind: Accountant) -> None:
    events = [DpEvent(1.1, 0.05, 30), DpEvent(1.1, 0.05, 30), DpEvent(0.9, 0.02, 10)]
    accountant = _stepped(RDPAccountant if kind is Accountant.RDP else PRVAccountant, events)
    kwargs = {"eps_error": PRV_EPS_ERROR} if kind is Accountant.PRV else {}
    expected = accountant.get_epsilon(DELTA, **kwargs)
    assert epsilon_of(events, DELTA, kind) == pytest.approx(expected, rel=1e-12)
    assert epsilon_of(events[-1:], DELTA, kind) < expected
    assert epsilon_of([], DELTA, kind) == 0.0


def test_epsilon_after_k_rounds_is_all_k_rounds_composed(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    for number in range(1, 6):
        assert store.record(ROUND, run_id=7, round_number=number)
        expected = _stepped(RDPAccountant, [ROUND] * number).get_epsilon(DELTA)
        assert store.spent_epsilon(DELTA) == pytest.approx(expected, rel=1e-12)
    assert store.history == (DpEvent(1.1, 32 / 600, 100),)  # merged: one entry
    last_round_alone = epsilon_of([ROUND], DELTA, Accountant.RDP)
    assert store.spent_epsilon(DELTA) > 1.5 * last_round_alone  # composition, not one round


def test_projection_adds_the_planned_round_without_charging_it(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    store.record(ROUND, 1, 1)
    projected = store.projected_epsilon(ROUND, DELTA)
    assert projected == pytest.approx(epsilon_of([ROUND, ROUND], DELTA, Accountant.RDP))
    assert store.spent_epsilon(DELTA) < projected
    assert len(store.charges) == 1


def test_a_round_is_charged_once(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    assert store.record(ROUND, run_id=1, round_number=3) is True
    spent = store.spent_epsilon(DELTA)
    assert store.record(ROUND, run_id=1, round_number=3) is False  # a retried report
    assert store.spent_epsilon(DELTA) == spent
    with pytest.raises(DoubleCharge):
        store.record(DpEvent(1.1, 32 / 600, 21), run_id=1, round_number=3)
    assert store.record(ROUND, run_id=2, round_number=3) is True  # same round, another run
    assert len(store.charges) == 2


def test_a_round_trained_twice_cannot_be_charged_as_one(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    assert store.record(ROUND, 1, 1, release_id="first")
    assert store.record(ROUND, 1, 1, release_id="first") is False  # same update resent
    with pytest.raises(DoubleCharge, match="trained twice"):
        store.record(ROUND, 1, 1, release_id="second")  # fresh noise: a second release
    assert AccountantStore.open(tmp_path).charge_for(1, 1).release_id == "first"


def test_a_new_run_on_the_same_data_continues_the_history(tmp_path: Path) -> None:
    first = AccountantStore.open(tmp_path)
    first.record(ROUND, run_id=1, round_number=1)
    other = DpEvent(2.0, 0.1, 5)
    second = AccountantStore.open(tmp_path)
    second.record(other, run_id=2, round_number=1)
    assert second.history == (ROUND, other)
    assert second.spent_epsilon(DELTA) == pytest.approx(
        epsilon_of([ROUND, other], DELTA, Accountant.RDP)
    )


def test_the_file_is_opacus_history_plus_charges(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    store.record(ROUND, 1, 1)
    store.record(ROUND, 1, 2)
    store.set_run_noise(1, 1.1)
    data = json.loads((tmp_path / STORE_RELATIVE_PATH).read_text())
    accountant = RDPAccountant()
    accountant.history = [tuple(entry) for entry in data["history"]]
    assert accountant.get_epsilon(DELTA) == pytest.approx(store.spent_epsilon(DELTA))
    assert [(c["run_id"], c["round"]) for c in data["charges"]] == [(1, 1), (1, 2)]
    assert data["run_noise"] == {"1": 1.1}
    assert sorted(p.name for p in (tmp_path / "dp").iterdir()) == [
        "accountant.json",
        "accountant.json.lock",
    ]


def test_run_noise_is_kept_once_per_run(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    assert store.run_noise(4) is None
    assert store.set_run_noise(4, 1.25) == 1.25
    assert store.set_run_noise(4, 2.0) == 1.25
    assert AccountantStore.open(tmp_path).run_noise(4) == 1.25


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: text.replace("fedseal-dp-accountant/1", "other/9"),
        lambda text: json.dumps({**json.loads(text), "history": []}),
        lambda text: json.dumps({**json.loads(text), "charges": json.loads(text)["charges"] * 2}),
    ],
)
def test_a_damaged_file_is_refused_not_reset(tmp_path: Path, damage) -> None:
    store = AccountantStore.open(tmp_path)
    store.record(ROUND, 1, 1)
    path = tmp_path / STORE_RELATIVE_PATH
    path.write_text(damage(path.read_text()))
    with pytest.raises(AccountantStoreError):
        AccountantStore.open(tmp_path)


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    store = AccountantStore.open(tmp_path)
    store.record(ROUND, 1, 1)
    before = (tmp_path / STORE_RELATIVE_PATH).read_bytes()

    def crash(*_args, **_kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        store.record(ROUND, 1, 2)
    monkeypatch.undo()
    assert (tmp_path / STORE_RELATIVE_PATH).read_bytes() == before
    assert not [p for p in (tmp_path / "dp").iterdir() if p.suffix == ".tmp"]
    assert len(AccountantStore.open(tmp_path).charges) == 1


def test_a_killed_site_restarts_with_the_same_spend(tmp_path: Path) -> None:
    """A site process charges two rounds and is killed (SIGKILL); the restarted site sees both."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from fedseal.client.dp.accountant_store import AccountantStore
        from fedseal.privacy.events import DpEvent
        store = AccountantStore.open(Path({str(tmp_path)!r}))
        for number in (1, 2):
            store.record(DpEvent(1.1, 32 / 600, 20), run_id=5, round_number=number)
        print(repr(store.spent_epsilon(1e-5)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL
    spent_before_kill = float(done.stdout.strip())
    restarted = AccountantStore.open(tmp_path)
    assert restarted.spent_epsilon(DELTA) == spent_before_kill
    assert restarted.spent_epsilon(DELTA) == pytest.approx(
        epsilon_of([ROUND, ROUND], DELTA, Accountant.RDP)
    )
    assert restarted.record(ROUND, run_id=5, round_number=2) is False  # not charged again
