"""How the coordinator pulls a stage's replies from the SuperLink (coordinator.messaging):
quickly while a stage is young, since key and signature stages end within a second, then
backing off, so a long training stage at many sites stays cheap; and a reply whose sender died
while pushing it, which stalls Flower's pull for minutes, does not cost the replies that
arrived meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from fedseal.coordinator import messaging
from fedseal.coordinator.messaging import Polling


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class LateGrid:
    """No reply until `ready_at`, then every one; records when each pull happened."""

    clock: Clock
    ready_at: float
    pulls: list[float] = field(default_factory=list)

    def pull_messages(self, ids: list[str]) -> list[SimpleNamespace]:
        self.pulls.append(self.clock.now)
        if self.clock.now < self.ready_at:
            return []
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ids]


def test_a_reply_early_in_a_stage_is_found_within_one_short_wait() -> None:
    clock = Clock()
    grid = LateGrid(clock, ready_at=0.61)
    polling = Polling(clock=clock, sleep=clock.sleep)
    replies = list(messaging._pull_replies(grid, ["a", "b", "c"], 60.0, polling))  # type: ignore[arg-type]
    assert len(replies) == 3
    # found no later than one first_wait after it arrived (doubling alone: 0.94 s, 0.33 late)
    assert grid.pulls[-1] - 0.61 <= polling.first_wait_s + 1e-9


def test_a_long_stage_backs_off_to_the_longest_wait() -> None:
    clock = Clock()
    grid = LateGrid(clock, ready_at=30.0)
    polling = Polling(clock=clock, sleep=clock.sleep)
    list(messaging._pull_replies(grid, ["a"], 60.0, polling))  # type: ignore[arg-type]
    late = [
        b - a
        for a, b in zip(grid.pulls[:-1], grid.pulls[1:], strict=True)
        if a > polling.quick_s + 2
    ]
    assert late and max(late) == pytest.approx(polling.max_wait_s)
    # the quick phase costs at most quick_s / first_wait_s pulls
    quick = [t for t in grid.pulls if t < polling.quick_s]
    assert len(quick) <= polling.quick_s / polling.first_wait_s + 1


def test_the_quick_wait_grows_with_the_number_of_pending_batches() -> None:
    polling = Polling()
    one = polling.next_wait(0.02, arrived=False, elapsed=0.1, pending=3)
    many = polling.next_wait(0.02, arrived=False, elapsed=0.1, pending=400)
    assert one == polling.first_wait_s
    assert many == polling.max_wait_s  # 100 batches: capped, one pull per batch per max_wait_s
    assert polling.next_wait(0.25, arrived=True, elapsed=10.0, pending=3) == polling.first_wait_s
    assert polling.next_wait(0.08, arrived=False, elapsed=10.0, pending=3) == 0.16


def test_a_negative_quick_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="quick_s"):
        Polling(quick_s=-1.0)


@dataclass
class StallingGrid:
    """Replies to a, then a pull that waits out the dead site's half-pushed reply (180 s)."""

    clock: Clock
    pulls: list[list[str]] = field(default_factory=list)

    def pull_messages(self, ids: list[str]) -> list[SimpleNamespace]:
        self.pulls.append(list(ids))
        if len(self.pulls) == 1:
            return [_reply("a")]
        if len(self.pulls) == 2:
            self.clock.now += 180.0  # Flower retries the missing objects until the session ends
            return [_reply("dead")]  # its error reply; b's came in while this pull waited
        return [_reply(i) for i in ids if i == "b"]


def _reply(to: str) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=to))


def test_replies_that_arrived_while_a_pull_stalled_are_still_taken() -> None:
    clock = Clock()
    polling = Polling(clock=clock, sleep=clock.sleep)
    grid = StallingGrid(clock)
    replies = messaging._pull_replies(grid, ["a", "dead", "b"], 60.0, polling)  # type: ignore[arg-type]
    assert [r.metadata.reply_to_message_id for r in replies] == ["a", "dead", "b"]
    assert grid.pulls[-1] == ["b"]


def test_no_extra_pull_when_the_deadline_passes_while_waiting() -> None:
    clock = Clock()
    polling = Polling(clock=clock, sleep=clock.sleep)

    class Silent:
        calls = 0

        def pull_messages(self, ids: list[str]) -> list[SimpleNamespace]:
            Silent.calls += 1
            return []

    assert list(messaging._pull_replies(Silent(), ["x"], 1.0, polling)) == []  # type: ignore[arg-type]
    pulls_at_deadline = Silent.calls
    assert clock.now >= 1.0 and pulls_at_deadline >= 2
