"""A reply whose sender died while pushing it stalls Flower's pull for minutes; the replies that
arrived meanwhile are still taken (fedseal.coordinator.messaging)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

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
