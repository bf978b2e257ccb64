"""Following a submitted run: progress, and continuing a run whose coordinator died."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fedseal.coordinator.run_launch import LaunchError, follow_run


class StubRegistry:
    """Registry runs by Flower run id; each lookup may advance a scripted sequence."""

    def __init__(self, runs: dict[int, list[SimpleNamespace | None]]) -> None:
        self.runs = runs

    def find_flower_run(self, flower_run_id: int):
        sequence = self.runs.get(flower_run_id, [None])
        return sequence.pop(0) if len(sequence) > 1 else sequence[0]


def run(run_id: int, status: str, completed: int) -> SimpleNamespace:
    return SimpleNamespace(id=run_id, status=status, rounds_completed=completed, rounds_planned=3)


def follow(registry, **kwargs):
    lines: list[str] = []
    options = {"timeout_s": 30, "report": lines.append, "poll_s": 0, "check_every_s": 0}
    return follow_run(registry, 11, **(options | kwargs)), lines


def test_progress_is_reported_until_the_run_completes() -> None:
    registry = StubRegistry(
        {11: [None, run(1, "running", 0), run(1, "running", 1), run(1, "completed", 3)]}
    )
    result, lines = follow(registry, flower_status=lambda _id: "running")
    assert result.status == "completed"
    assert lines == [
        "waiting for the coordinator to start Flower run 11",
        "run 1: 0 of 3 rounds completed",
        "run 1: 1 of 3 rounds completed",
        "run 1: 3 of 3 rounds completed",
    ]


def test_a_run_that_lost_its_coordinator_is_continued_from_the_registry() -> None:
    registry = StubRegistry(
        {11: [run(1, "running", 1)], 12: [None, run(2, "running", 1), run(2, "completed", 3)]}
    )
    resubmitted: list[int] = []

    def resubmit(run_id: int) -> int:
        resubmitted.append(run_id)
        return 12

    status = {11: "finished:failed", 12: "running"}
    result, lines = follow(registry, flower_status=status.get, resubmit=resubmit)
    assert resubmitted == [1]
    assert result.id == 2 and result.status == "completed"
    assert any("run 1 lost its coordinator" in line and "attempt 1 of 3" in line for line in lines)
    assert "submitted Flower run 12 to continue run 1" in lines


def test_without_resubmission_a_lost_coordinator_fails_with_the_way_out() -> None:
    registry = StubRegistry({11: [run(1, "running", 2)]})
    with pytest.raises(LaunchError, match=r"start-run --resume"):
        follow(registry, flower_status=lambda _id: "finished:failed")


def test_resumes_are_bounded() -> None:
    registry = StubRegistry({11: [run(1, "running", 0)], 12: [run(1, "running", 0)]})
    with pytest.raises(LaunchError, match="lost its coordinator"):
        follow(
            registry,
            flower_status=lambda _id: "finished:failed",
            resubmit=lambda _run_id: 12,
            max_resumes=1,
        )


def test_a_run_flower_ended_before_the_registry_saw_it_fails() -> None:
    registry = StubRegistry({11: [None]})
    with pytest.raises(LaunchError, match="before the coordinator recorded it"):
        follow(registry, flower_status=lambda _id: "finished:failed")
