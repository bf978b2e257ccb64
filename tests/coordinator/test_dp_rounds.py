"""Differential privacy through the real round loop: charges, declines and the registry's ledger.

In-process federation (real site workers, real Opacus DP-SGD on MiniLM + LoRA, real TenSEAL);
each site's budget lives in its accountant store on disk, the coordinator's copy in the registry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inprocess_federation import run_inprocess

from fedseal.client.dp.accountant_store import AccountantStore
from fedseal.client.dp.settings import default_delta
from fedseal.client.site_config import load_site_config
from fedseal.client.site_service import SiteService
from fedseal.contract.wire import Key, MessageType
from fedseal.models.data import load_site_data, scenario_site_names
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent

SIGMA = 1.0
BATCH = 8  # the harness's [training] batch_size
STEPS = 1


def _site_event(site: str, sites: int = 3) -> tuple[DpEvent, float]:
    """The event one round of `site` releases at σ = SIGMA, and the site's default δ."""
    split, _labels = load_site_data("hospitals", site, sites, 0)
    n = len(split.train)
    return DpEvent(SIGMA, BATCH / n, STEPS), default_delta(n)


def _budget_for_rounds(site: str, rounds: int) -> float:
    """A budget that fits exactly `rounds` rounds of `site` (half-way to the next one)."""
    event, delta = _site_event(site)
    fits = epsilon_of([event] * rounds, delta, Accountant.RDP)
    too_much = epsilon_of([event] * (rounds + 1), delta, Accountant.RDP)
    return (fits + too_much) / 2


def _ledger_by_site(outcome) -> dict[str, list]:
    entries: dict[str, list] = {}
    for entry in outcome.registry.privacy_ledger(run_id=outcome.run_id):
        entries.setdefault(entry.site, []).append(entry)
    return entries


def test_exhausted_site_declines_and_the_run_goes_on_without_it(tmp_path: Path) -> None:
    """he+ss, 3 sites, 3 rounds; one site's budget fits one round only."""
    names = scenario_site_names("hospitals", 3)
    poor = names[0]
    dp = {site: {"epsilon": 50.0, "noise_multiplier": SIGMA} for site in names}
    dp[poor] = {"epsilon": _budget_for_rounds(poor, 1), "noise_multiplier": SIGMA}
    outcome = run_inprocess(tmp_path, mode="he+ss", rounds=3, steps=STEPS, dp=dp)

    rounds = {r.number: r for r in outcome.registry.rounds(outcome.run_id)}
    assert [str(rounds[n].status) for n in (1, 2, 3)] == ["completed"] * 3
    statuses = {n: {c.site: str(c.status) for c in rounds[n].contributions} for n in (1, 2, 3)}
    assert statuses[1] == dict.fromkeys(names, "contributed")
    assert statuses[2][poor] == "declined"
    assert all(statuses[2][s] == "contributed" for s in names[1:])
    assert poor not in statuses[3], "a site that declined for lack of budget is not sampled again"
    assert all(statuses[3][s] == "contributed" for s in names[1:])

    ledger = _ledger_by_site(outcome)
    assert [(e.round_number, str(e.status)) for e in ledger[poor]] == [
        (1, "charged"),
        (2, "declined"),
    ]
    declined = ledger[poor][1]
    assert declined.epsilon_round == 0.0
    assert declined.epsilon_cumulative == pytest.approx(ledger[poor][0].epsilon_cumulative)
    assert declined.epsilon_cumulative <= declined.budget
    assert outcome.registry.exhausted_sites(outcome.run_id) == [poor]
    for site in names[1:]:
        assert [str(e.status) for e in ledger[site]] == ["charged"] * 3

    # the registry's figures are the sites' own accountants' figures, composed over all rounds
    for site in names:
        event, delta = _site_event(site)
        store = AccountantStore.open(outcome.services[site].config.site.state_dir)
        charged = [e for e in ledger[site] if str(e.status) == "charged"]
        assert len(store.charges) == len(charged)
        expected = epsilon_of([event] * len(charged), delta, Accountant.RDP)
        assert store.spent_epsilon(delta) == pytest.approx(expected)
        assert charged[-1].epsilon_cumulative == pytest.approx(expected)
        assert charged[-1].epsilon_cumulative <= charged[-1].budget
        assert (charged[0].noise_multiplier, charged[0].sample_rate) == (SIGMA, event.sample_rate)


def test_a_restarted_site_keeps_its_spend_and_a_new_run_continues_it(tmp_path: Path) -> None:
    """Site workers are rebuilt from their config between runs (as a restarted fl-client is);
    the second run's charges compose on top of the first's, never from zero."""
    names = scenario_site_names("hospitals", 3)
    dp = {site: {"epsilon": 50.0, "noise_multiplier": SIGMA} for site in names}
    first = run_inprocess(tmp_path, mode="plain", rounds=1, steps=STEPS, dp=dp, run_id=7001)
    spent_before = {}
    for site in names:
        _event, delta = _site_event(site)
        spent_before[site] = AccountantStore.open(
            first.services[site].config.site.state_dir
        ).spent_epsilon(delta)
        assert spent_before[site] > 0

    # a restarted site: a new worker from the same config and state directory
    restarted = SiteService(load_site_config(tmp_path / "sites" / f"{names[0]}.toml"))
    _event, delta = _site_event(names[0])
    assert restarted.config.resolve_dp(len(restarted.data().train)).require_delta() == delta
    assert (
        AccountantStore.open(restarted.config.site.state_dir).spent_epsilon(delta)
        == (spent_before[names[0]])
    )

    second = run_inprocess(
        tmp_path,
        mode="plain",
        rounds=1,
        steps=STEPS,
        dp=dp,
        run_id=7002,
        registry=first.registry,
    )
    ledger = _ledger_by_site(second)
    for site in names:
        event, delta = _site_event(site)
        (entry,) = ledger[site]
        assert str(entry.status) == "charged"
        assert entry.epsilon_cumulative == pytest.approx(
            epsilon_of([event, event], delta, Accountant.RDP)
        )
        assert entry.epsilon_cumulative > spent_before[site]
        assert first.registry.site_epsilon_spent(site) == pytest.approx(entry.epsilon_cumulative)


def test_a_run_target_calibrates_noise_once_and_lands_on_it(tmp_path: Path) -> None:
    """`target_epsilon`: σ is calibrated for the run's planned rounds; the last round's
    cumulative ε is at most the target and close to it."""
    names = scenario_site_names("hospitals", 2)
    dp = {site: {"epsilon": 10.0, "target_epsilon": 2.0} for site in names}
    outcome = run_inprocess(tmp_path, mode="plain", sites=2, rounds=2, steps=STEPS, dp=dp)
    for site, entries in _ledger_by_site(outcome).items():
        assert [str(e.status) for e in entries] == ["charged", "charged"]
        assert entries[0].noise_multiplier == entries[1].noise_multiplier  # one σ per run
        assert 1.9 <= entries[-1].epsilon_cumulative <= 2.0, site


def test_train_loss_is_not_reported_under_dp(tmp_path: Path) -> None:
    """The mean training loss is a statistic of the private records: not sent under DP."""
    names = scenario_site_names("hospitals", 2)
    dp = {site: {"epsilon": 50.0, "noise_multiplier": SIGMA} for site in names}
    outcome = run_inprocess(tmp_path, mode="plain", sites=2, rounds=1, steps=STEPS, dp=dp)
    (view,) = outcome.registry.rounds(outcome.run_id)
    assert {str(c.status) for c in view.contributions} == {"contributed"}
    assert all(c.train_loss is None for c in view.contributions)


def test_ledger_entries_are_signed_and_bound_to_the_update_sent(tmp_path: Path) -> None:
    """Each charged entry carries the site's signature and the digest of the update the
    coordinator received, which the contribution records too; a declined entry has none."""
    names = scenario_site_names("hospitals", 2)
    dp = {site: {"epsilon": 50.0, "noise_multiplier": SIGMA} for site in names}
    outcome = run_inprocess(tmp_path, mode="he+ss", sites=2, rounds=1, steps=STEPS, dp=dp)
    (view,) = outcome.registry.rounds(outcome.run_id)
    digests = {c.site: c.update_digest for c in view.contributions}
    for entry in outcome.registry.privacy_ledger(run_id=outcome.run_id):
        assert entry.site_signature and entry.entry_hash and entry.coordinator_signature
        assert len(entry.update_digest) == 64 and entry.update_digest == digests[entry.site]


def test_a_statement_altered_in_transit_is_refused(tmp_path: Path) -> None:
    """A relayed statement whose ε was lowered no longer verifies: no ledger entry is
    written from it and the site's contribution is marked failed."""
    names = scenario_site_names("hospitals", 2)
    dp = {site: {"epsilon": 50.0, "noise_multiplier": SIGMA} for site in names}
    victim = names[0]

    def lower_epsilon(site: str, kind: str, result: dict) -> dict | None:
        if site != victim or kind != MessageType.TRAIN or Key.PRIVACY not in result:
            return None
        statement = json.loads(result[Key.PRIVACY])
        statement["epsilon_cumulative"] /= 2
        return {**result, Key.PRIVACY: json.dumps(statement)}

    outcome = run_inprocess(
        tmp_path, mode="plain", sites=2, rounds=1, steps=STEPS, dp=dp, tamper=lower_epsilon
    )
    assert {e.site for e in outcome.registry.privacy_ledger(run_id=outcome.run_id)} == {names[1]}
    (view,) = outcome.registry.rounds(outcome.run_id)
    by_site = {c.site: c for c in view.contributions}
    assert str(by_site[victim].status) == "failed"
    assert "privacy entry refused" in by_site[victim].error
