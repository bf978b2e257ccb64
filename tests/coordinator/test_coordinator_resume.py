"""A coordinator killed mid-round and restarted continues the run from the registry.

In-process federation (real site workers, DP, he+ss). The coordinator dies in round 2 after the
sites trained, charged and uploaded, before anything of the round reached the registry; the
restarted ServerApp (a new Flower run with `resume-run`) closes round 2 as aborted, records the
statements the sites kept for it, and runs round 3 from the round-1 global adapter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_grid import CoordinatorKilled, crashing_grid
from inprocess_federation import run_inprocess

from fedseal.audit.verify import verify_database
from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.client.dp.accountant_store import AccountantStore
from fedseal.contract.wire import MessageType
from fedseal.coordinator.resume import ResumeError, plan_resume
from fedseal.coordinator.run_settings import RunSettings, default_run_config
from fedseal.models.data import scenario_site_names

SITES = scenario_site_names("hospitals", 3)
DP = {site: {"epsilon": 50.0, "noise_multiplier": 1.0} for site in SITES}
FIRST, SECOND = 5001, 5002  # Flower run ids before and after the restart


def test_a_restarted_coordinator_resumes_at_the_next_round(tmp_path: Path) -> None:
    with pytest.raises(CoordinatorKilled):
        run_inprocess(
            tmp_path,
            rounds=3,
            dp=DP,
            run_id=FIRST,
            grid_class=crashing_grid(2, MessageType.CONSISTENCY),
        )
    from fedseal.registry import open_registry
    from fedseal.registry.ledger_key import load_ledger_key

    registry = open_registry(
        f"sqlite:///{tmp_path / 'registry.db'}",
        ledger_key=load_ledger_key(tmp_path / "coordinator"),
    )
    (interrupted,) = registry.list_runs()
    assert str(interrupted.status) == "running"
    assert {(r.number, str(r.status)) for r in registry.rounds(interrupted.id)} == {
        (1, "completed"),
        (2, "running"),
    }
    assert {e.round_number for e in registry.privacy_ledger()} == {1}  # round 2's were lost

    outcome = run_inprocess(
        tmp_path, rounds=3, dp=DP, run_id=SECOND, registry=registry, resume_run=interrupted.id
    )

    old = registry.get_run(interrupted.id)
    assert str(old.status) == "aborted" and f"continued as run {outcome.run_id}" in old.error
    old_rounds = registry.rounds(interrupted.id)
    assert [(r.number, str(r.status)) for r in old_rounds] == [(1, "completed"), (2, "aborted")]
    assert "coordinator stopped during the round" in old_rounds[1].error
    new = registry.get_run(outcome.run_id)
    assert str(new.status) == "completed"
    assert new.config["resumes_run"] == interrupted.id and new.config["first_round"] == 3
    new_rounds = registry.rounds(outcome.run_id)
    assert [(r.number, str(r.status), r.participants) for r in new_rounds] == [(3, "completed", 3)]
    # the run went on from the round-1 adapter the sites held (round 3's train checked it)
    assert old_rounds[0].global_digest != new_rounds[0].global_digest
    events = [
        (e.action, e.run_id, e.details.get("status"))
        for e in registry.events()
        if e.action in {"run_started", "run_finished"}
    ]
    assert events == [
        ("run_started", interrupted.id, None),
        ("run_started", outcome.run_id, None),
        ("run_finished", interrupted.id, "aborted"),
        ("run_finished", outcome.run_id, "completed"),
    ]

    # every charge once in the ledger: round 2's recovered from the sites, none trained twice
    entries = registry.privacy_ledger()
    keys = [(e.site, e.run_id, e.round_number) for e in entries]
    assert len(keys) == len(set(keys))
    for site in SITES:
        state_dir = outcome.services[site].config.site.state_dir
        charges = [(c.run_id, c.round) for c in AccountantStore.open(state_dir).charges]
        assert charges == [(FIRST, 1), (FIRST, 2), (SECOND, 3)], site
        assert [(r, n) for s, r, n in keys if s == site] == [
            (interrupted.id, 1),
            (interrupted.id, 2),
            (outcome.run_id, 3),
        ]
        stored = GlobalAdapterStore(state_dir, SECOND).state()
        assert stored is not None
        assert (stored.applied_round, stored.digest) == (3, new_rounds[-1].global_digest)
    _snapshot, result = verify_database(f"sqlite:///{tmp_path / 'registry.db'}")
    assert not result.findings, [str(f) for f in result.findings]

    # neither run can be resumed again
    settings = RunSettings.from_run_config(
        {
            **default_run_config(
                database_url="sqlite://", scenario="hospitals", labels=list(new.config["labels"])
            ),
            "rounds": 3,
            "steps": 1,
            "min-sites": 3,
            "coordinator-state": str(tmp_path / "coordinator"),
        }
    )
    for run_id in (interrupted.id, outcome.run_id):
        with pytest.raises(ResumeError, match="only a run whose coordinator stopped"):
            plan_resume(registry, run_id, settings)


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CoordinatorKilled):
        run_inprocess(
            tmp_path,
            mode="plain",
            rounds=2,
            run_id=FIRST,
            grid_class=crashing_grid(1, MessageType.TRAIN),
        )
    with pytest.raises(ResumeError, match=r"other settings .*mode"):
        run_inprocess(tmp_path, mode="he+ss", rounds=2, run_id=SECOND, resume_run=1)
