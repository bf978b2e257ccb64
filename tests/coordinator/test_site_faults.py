"""Sites killed at each stage of a he+ss round, restarted for the next one (real site workers).

3 sites, k = 2, DP on every site. A site dies right after handling the stage's message (its
state on disk changed, its reply lost); the round completes with the two survivors, or aborts
when too few survive; the site restarts on a new node and joins the next round with its privacy
budget and global adapter intact, and the ledger verifies with fl-audit's checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_grid import fault_grid
from inprocess_federation import run_inprocess

from fedseal.audit.verify import verify_database
from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.client.dp.accountant_store import AccountantStore
from fedseal.contract.wire import MessageType
from fedseal.coordinator import server_app
from fedseal.models.data import scenario_site_names

SITES = scenario_site_names("hospitals", 3)
VICTIM = SITES[-1]
DP = {site: {"epsilon": 50.0, "noise_multiplier": 1.0} for site in SITES}

# stage -> (message the victim dies handling, its round-1 contribution, whether it was charged)
STAGES = {
    "advertise": (MessageType.ADVERTISE, "dropped", False),
    "share": (MessageType.SHARE, "dropped", False),
    "upload": (MessageType.TRAIN, "dropped", True),
    "unmask": (MessageType.CONSISTENCY, "contributed", True),
    "apply": (MessageType.APPLY, "contributed", True),
}


def _run_with_kills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kills: dict[str, tuple[int, str]]
):
    grid_class = fault_grid(kills, tmp_path / "sites")
    original = server_app.run_round

    def restart_then_run(grid, number, *args, **kwargs):
        if number > 1:
            grid.restart_dead()  # the killed sites' fl-client came back
        return original(grid, number, *args, **kwargs)

    monkeypatch.setattr(server_app, "run_round", restart_then_run)
    return run_inprocess(  # every round keyed on its own: a restarted site rejoins the next
        tmp_path,
        mode="he+ss",
        rounds=2,
        steps=1,
        dp=DP,
        grid_class=grid_class,
        run_config={"key_rounds": 1},
    )


def _check_budget_and_ledger(outcome, tmp_path: Path) -> None:
    """Every charge a site's accountant holds is in the ledger exactly once, and fl-audit's
    checks (chain, signatures, every ε recomputed in chain order, contributions) all pass."""
    flower_run = str(outcome.grid.run_id)
    ledger = outcome.registry.privacy_ledger(run_id=outcome.run_id)
    keys = [(e.site, e.round_number) for e in ledger]
    assert len(keys) == len(set(keys)), "a ledger entry was written twice"
    for site in SITES:
        store = AccountantStore.open(outcome.services[site].config.site.state_dir)
        charged = {(c.run_id, c.round) for c in store.charges}
        in_ledger = {(flower_run, e.round_number) for e in ledger if e.site == site}
        assert {(str(r), n) for r, n in charged} == in_ledger, site
    _snapshot, result = verify_database(f"sqlite:///{tmp_path / 'registry.db'}")
    assert not result.findings, [str(f) for f in result.findings]


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_site_killed_at_a_stage_rejoins_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    kind, status, charged = STAGES[stage]
    outcome = _run_with_kills(tmp_path, monkeypatch, {VICTIM: (1, kind)})
    assert outcome.grid.killed == [(VICTIM, 1, kind)]

    first, second = outcome.registry.rounds(outcome.run_id)
    assert str(first.status) == "completed", first.error  # two survivors are enough (k = 2)
    by_site = {c.site: c for c in first.contributions}
    assert str(by_site[VICTIM].status) == status
    if stage == "apply":
        assert by_site[VICTIM].adapter_digest is None  # it never confirmed applying
    assert all(str(by_site[s].status) == "contributed" for s in SITES if s != VICTIM)

    # restarted on a new node, the site catches up and takes part in round 2
    assert str(second.status) == "completed", second.error
    assert second.participants == 3
    assert {c.adapter_digest for c in second.contributions} == {second.global_digest}
    state_dir = outcome.grid.services[VICTIM].config.site.state_dir
    stored = GlobalAdapterStore(state_dir, outcome.grid.run_id).state()
    assert stored is not None and (stored.applied_round, stored.digest) == (
        2,
        second.global_digest,
    )

    # its budget: round 1 charged once if it trained (the charge survived the kill), never twice
    victim_rounds = sorted(
        e.round_number
        for e in outcome.registry.privacy_ledger(run_id=outcome.run_id)
        if e.site == VICTIM
    )
    assert victim_rounds == ([1, 2] if charged else [2])
    _check_budget_and_ledger(outcome, tmp_path)


def test_below_the_threshold_the_round_aborts_and_the_sites_rejoin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two of three sites die at upload (after training and charging): round 1 aborts, with
    nothing applied; restarted, they train round 2, which completes from the unchanged adapter."""
    kills = {site: (1, MessageType.TRAIN) for site in SITES[1:]}
    outcome = _run_with_kills(tmp_path, monkeypatch, kills)
    first, second = outcome.registry.rounds(outcome.run_id)
    assert str(first.status) == "aborted" and first.global_digest is None
    assert str(second.status) == "completed", second.error
    assert second.participants == 3
    assert {c.adapter_digest for c in second.contributions} == {second.global_digest}
    # the aborted round's training was charged, and the ledger holds those charges too
    entries = outcome.registry.privacy_ledger(run_id=outcome.run_id)
    assert sorted((e.site, e.round_number) for e in entries) == sorted(
        (site, n) for site in SITES for n in (1, 2)
    )
    _check_budget_and_ledger(outcome, tmp_path)
