"""Each round's stages are timed into the run's summary, and `fl-coordinator status` shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
from inprocess_federation import run_inprocess

from fedseal.coordinator.stage_timing import (
    ProgressWatch,
    RoundTimings,
    read_progress,
    read_stage_summary,
    run_folder,
)
from fedseal.coordinator.status_report import collect_status, render_status

HE_SS_STAGES = ["advertise", "share", "train", "consistency", "release", "apply"]
BATCHED_STAGES = ["train", "consistency", "release", "apply"]  # keys made by round 1's batch


@pytest.mark.parametrize(
    ("key_rounds", "second"), [(1, HE_SS_STAGES), (5, BATCHED_STAGES)], ids=["K=1", "K=5"]
)
def test_an_he_ss_round_records_every_stage_with_the_sites_own_work(
    tmp_path: Path, key_rounds: int, second: list[str]
) -> None:
    outcome = run_inprocess(tmp_path, mode="he+ss", rounds=2, run_config={"key_rounds": key_rounds})
    state = tmp_path / "coordinator"
    folder = run_folder(state, outcome.run_id)
    rounds = read_stage_summary(folder)
    assert [r["round"] for r in rounds] == [1, 2]
    assert [str(r.status) for r in outcome.registry.rounds(outcome.run_id)] == ["completed"] * 2
    for entry, expected in zip(rounds, [HE_SS_STAGES, second], strict=True):
        stages = entry["stages"]
        assert [s["stage"] for s in stages] == expected
        for stage in stages:
            assert stage["sites"] == stage["answered"] == 3
            # the sites measured their own work; it fits inside the coordinator's wait
            assert 0 < stage["work_s"] <= stage["wait_s"]
            assert stage["flower_s"] >= 0
    assert read_progress(folder) is None  # the round finished: nothing in progress

    report = collect_status(outcome.registry, outcome.run_id, state)
    text = render_status(report)
    assert "Stages of run" in text
    for name in HE_SS_STAGES:
        assert any(line.startswith(name) for line in text.splitlines())


def test_progress_is_reported_once_per_change(tmp_path: Path) -> None:
    lines: list[str] = []
    watch = ProgressWatch(lines.append)
    timings = RoundTimings(3, tmp_path)
    timings.progress("share", 1, 3)
    watch.check(tmp_path)
    watch.check(tmp_path)
    timings.progress("share", 2, 3)
    watch.check(tmp_path)
    assert len(lines) == 2
    assert lines[-1].startswith("round 3: share, 2 of 3 sites answered")
