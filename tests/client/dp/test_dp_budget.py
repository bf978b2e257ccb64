"""Budget checks before each round, noise calibration with history, and the ledger report."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opacus.accountants.utils import get_noise_multiplier
from registry_signing import SiteSigner

from fedseal.client.dp.accountant_store import AccountantStore
from fedseal.client.dp.budget import BudgetReason, check_round
from fedseal.client.dp.calibration import calibrate_noise, noise_for_run
from fedseal.client.dp.errors import CalibrationError, DpConfigError
from fedseal.client.dp.report import charged_report, declined_report
from fedseal.client.dp.settings import DpSettings
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.privacy.status import PrivacyStatus

DELTA = 1e-5
Q = 32 / 600


def _settings(epsilon: float = 3.0, **kwargs) -> DpSettings:
    kwargs.setdefault("noise_multiplier", 1.1)
    return DpSettings(epsilon=epsilon, delta=DELTA, **kwargs)


# -- check_round -----------------------------------------------------------------------------


def test_rounds_are_allowed_until_the_budget_would_be_exceeded(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    event = DpEvent(1.1, Q, 20)
    dp = _settings(epsilon=3.0)
    allowed = 0
    for number in range(1, 20):
        decision = check_round(store, event, dp, run_id=1, round_number=number)
        assert decision.epsilon_now == pytest.approx(store.spent_epsilon(DELTA))
        assert decision.budget == 3.0
        if not decision.allowed:
            assert decision.reason is BudgetReason.BUDGET_EXHAUSTED
            assert decision.reason == "budget exhausted"
            assert decision.epsilon_after > 3.0
            break
        assert decision.reason is BudgetReason.WITHIN_BUDGET and decision.epsilon_after <= 3.0
        store.record(event, 1, number)
        allowed += 1
    assert 1 <= allowed < 19
    assert store.spent_epsilon(DELTA) <= 3.0
    # an exhausted site keeps declining, in this run and the next
    assert not check_round(store, event, dp, run_id=2, round_number=1).allowed


def test_a_round_already_charged_is_not_trained_again(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    event = DpEvent(1.1, Q, 20)
    store.record(event, run_id=1, round_number=1)
    decision = check_round(store, event, _settings(), run_id=1, round_number=1)
    assert not decision.allowed and decision.reason is BudgetReason.ALREADY_CHARGED
    assert decision.epsilon_after == decision.epsilon_now
    assert check_round(store, event, _settings(), run_id=1, round_number=2).allowed


def test_check_round_needs_a_resolved_delta(tmp_path: Path) -> None:
    unresolved = DpSettings(epsilon=3.0, noise_multiplier=1.1)
    with pytest.raises(DpConfigError):
        check_round(AccountantStore.open(tmp_path), DpEvent(1.1, Q, 1), unresolved)


def _run_rounds(budget: float, accountant: Accountant, runs: list[tuple]) -> None:
    """Every round goes through check_round, then record when allowed; ε stays in budget."""
    dp = DpSettings(epsilon=budget, delta=DELTA, noise_multiplier=1.0, accountant=accountant)
    with tempfile.TemporaryDirectory() as folder:
        store = AccountantStore.open(Path(folder))
        for run_id, (sigma, q, steps, rounds) in enumerate(runs, start=1):
            event = DpEvent(sigma, q, steps)
            for number in range(1, rounds + 1):
                decision = check_round(store, event, dp, run_id=run_id, round_number=number)
                if decision.allowed:
                    store.record(event, run_id, number)
                    # a retried round is neither trained nor charged again
                    retry = check_round(store, event, dp, run_id=run_id, round_number=number)
                    assert not retry.allowed
                spent = store.spent_epsilon(DELTA, accountant)
                assert spent <= budget
                expected = decision.epsilon_after if decision.allowed else decision.epsilon_now
                assert spent == pytest.approx(expected)
        reopened = AccountantStore.open(Path(folder))
        assert reopened.spent_epsilon(DELTA, accountant) == store.spent_epsilon(DELTA, accountant)


def _runs(max_runs: int, max_rounds: int):
    return st.lists(
        st.tuples(
            st.floats(min_value=0.4, max_value=6.0),  # σ
            st.floats(min_value=0.001, max_value=0.5),  # q
            st.integers(min_value=1, max_value=300),  # steps per round
            st.integers(min_value=1, max_value=max_rounds),  # rounds
        ),
        min_size=1,
        max_size=max_runs,
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.floats(min_value=0.2, max_value=12.0), runs=_runs(4, 15))
def test_cumulative_epsilon_never_exceeds_the_budget_rdp(budget: float, runs: list) -> None:
    _run_rounds(budget, Accountant.RDP, runs)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.floats(min_value=0.3, max_value=12.0), runs=_runs(2, 4))
def test_cumulative_epsilon_never_exceeds_the_budget_prv(budget: float, runs: list) -> None:
    _run_rounds(budget, Accountant.PRV, runs)


# -- calibration -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Optimal order is the largest alpha")
def test_calibration_on_a_fresh_site_matches_opacus() -> None:
    sigma = calibrate_noise([], target_epsilon=2.0, delta=DELTA, sample_rate=Q, steps=200)
    reference = get_noise_multiplier(
        target_epsilon=2.0, target_delta=DELTA, sample_rate=Q, steps=200, accountant="rdp"
    )
    assert sigma == pytest.approx(reference, rel=0.02)
    assert epsilon_of([DpEvent(sigma, Q, 200)], DELTA, Accountant.RDP) <= 2.0


@pytest.mark.parametrize("accountant", [Accountant.RDP, Accountant.PRV])
def test_calibration_counts_the_history(accountant: Accountant) -> None:
    history = [DpEvent(1.5, Q, 100)]
    fresh = calibrate_noise(
        [], target_epsilon=3.0, delta=DELTA, sample_rate=Q, steps=100, accountant=accountant
    )
    sigma = calibrate_noise(
        history, target_epsilon=3.0, delta=DELTA, sample_rate=Q, steps=100, accountant=accountant
    )
    assert sigma > fresh  # what was spent leaves less room: more noise
    reached = epsilon_of([*history, DpEvent(sigma, Q, 100)], DELTA, accountant)
    assert 2.9 <= reached <= 3.0
    # Opacus' fresh-start answer would overspend once the history is counted
    assert epsilon_of([*history, DpEvent(fresh, Q, 100)], DELTA, accountant) > 3.0


def test_calibration_says_when_the_target_is_out_of_reach() -> None:
    spent = [DpEvent(0.8, Q, 500)]
    with pytest.raises(CalibrationError, match="already spent"):
        calibrate_noise(spent, target_epsilon=1.0, delta=DELTA, sample_rate=Q, steps=10)
    with pytest.raises(CalibrationError, match="unreachable"):
        calibrate_noise([], target_epsilon=0.05, delta=DELTA, sample_rate=Q, steps=10)


def test_noise_is_calibrated_once_per_run(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    dp = DpSettings(epsilon=3.0, delta=DELTA, target_epsilon=2.0)
    kwargs = {"sample_rate": Q, "steps_per_round": 20, "rounds_remaining": 5}
    sigma = noise_for_run(store, dp, run_id=1, **kwargs)
    assert epsilon_of([DpEvent(sigma, Q, 100)], DELTA, Accountant.RDP) <= 2.0
    store.record(DpEvent(sigma, Q, 20), 1, 1)
    assert noise_for_run(AccountantStore.open(tmp_path), dp, run_id=1, **kwargs) == sigma
    # every planned round of the run fits the budget
    for number in range(2, 6):
        assert check_round(store, DpEvent(sigma, Q, 20), dp, run_id=1, round_number=number).allowed
        store.record(DpEvent(sigma, Q, 20), 1, number)
    assert store.spent_epsilon(DELTA) <= 2.0
    fixed = DpSettings(epsilon=3.0, delta=DELTA, noise_multiplier=0.9)
    assert noise_for_run(store, fixed, run_id=2, **kwargs) == 0.9


# -- ledger report ---------------------------------------------------------------------------


def test_reports_carry_the_mechanism_and_recomputable_epsilons(tmp_path: Path) -> None:
    store = AccountantStore.open(tmp_path)
    event = DpEvent(1.1, Q, 20)
    dp = _settings(epsilon=1.0, max_grad_norm=0.7)
    store.record(event, 1, 1)
    report = charged_report(store, event, dp)
    assert report.status is PrivacyStatus.CHARGED
    assert report.epsilon_round == pytest.approx(epsilon_of([event], DELTA, Accountant.RDP))
    assert report.epsilon_cumulative == pytest.approx(store.spent_epsilon(DELTA))
    fields = report.as_fields()
    assert fields == {
        "status": "charged",
        "noise_multiplier": 1.1,
        "sample_rate": Q,
        "steps": 20,
        "max_grad_norm": 0.7,
        "delta": DELTA,
        "accountant": "rdp",
        "epsilon_round": report.epsilon_round,
        "epsilon_cumulative": report.epsilon_cumulative,
        "budget": 1.0,
    }
    decision = check_round(store, DpEvent(1.1, Q, 400), dp, run_id=1, round_number=2)
    declined = declined_report(decision, DpEvent(1.1, Q, 400), dp)
    assert declined.status is PrivacyStatus.DECLINED and declined.epsilon_round == 0.0
    assert declined.epsilon_cumulative == pytest.approx(report.epsilon_cumulative)


def test_reports_are_what_the_registry_ledger_takes(
    tmp_path: Path, ledger_key: Ed25519PrivateKey, site_signer: SiteSigner
) -> None:
    """The site's report fields, signed with the run's Flower id, the round and the update
    digest, are `Registry.record_privacy`'s keyword arguments."""
    from fedseal.registry import PrivacyStatus, open_registry

    store = AccountantStore.open(tmp_path / "site")
    dp = _settings(epsilon=1.0)
    event = DpEvent(1.1, Q, 20)
    store.record(event, 1, 1)
    charged = charged_report(store, event, dp)
    planned = DpEvent(1.1, Q, 400)
    decision = check_round(store, planned, dp, run_id=1, round_number=2)
    declined = declined_report(decision, planned, dp)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with open_registry(url, ledger_key=ledger_key) as registry:
        site_signer.enroll(registry, "hospital_c")
        run_id = registry.start_run(
            scenario="hospitals",
            protocol_mode="plain",
            config={},
            rounds_planned=2,
            flower_run_id=1,
        )
        for number, report, digest in ((1, charged, "0f" * 32), (2, declined, "")):
            registry.record_privacy(
                **site_signer.signed(
                    registry,
                    run_id=run_id,
                    round_number=number,
                    site="hospital_c",
                    update_digest=digest,
                    **report.as_fields(),
                )
            )
        ledger = registry.privacy_ledger(site="hospital_c")
        assert [e.status for e in ledger] == [PrivacyStatus.CHARGED, PrivacyStatus.DECLINED]
        assert registry.site_epsilon_spent("hospital_c") == pytest.approx(
            store.spent_epsilon(DELTA)
        )
        assert registry.exhausted_sites(run_id) == ["hospital_c"]
