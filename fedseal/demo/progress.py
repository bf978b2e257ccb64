"""What fl-demo prints while it runs: its one-line notes, and the live per-round table read from
the registry as rounds are recorded."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from fedseal.registry import Registry, RoundView, RunView

__all__ = ["PROG", "ProgressTable", "find_run", "say"]

PROG = "fl-demo"


def say(message: str) -> None:
    """One note on stdout, named as the command's, printed at once."""
    print(f"{PROG}: {message}", flush=True)


# loss, acc and auc are the sites' scores on their own test sets, weighted by test size: the
# accuracy is then exactly the accuracy on the union of the test sets (the global test set).
_HEADER = (
    f"{'round':>5}  {'status':<9}  {'sites':>5}  {'dropped':>7}  {'loss':>7}  "
    f"{'acc':>6}  {'auc':>6}  {'seconds':>7}"
)


def _fmt(value: float | None, width: int, digits: int = 4) -> str:
    return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_round(view: RoundView) -> str:
    return (
        f"{view.number:>5}  {view.status!s:<9}  {view.participants:>5}  {view.dropped:>7}  "
        f"{_fmt(view.loss, 7)}  {_fmt(view.accuracy, 6)}  {_fmt(view.auc, 6)}  "
        f"{_fmt(view.duration_s, 7, 1)}"
    )


def find_run(registry: Registry, flower_run_id: int) -> RunView | None:
    """The registry's record of a Flower run, once the ServerApp has created it."""
    for run in registry.list_runs():
        if run.flower_run_id == str(flower_run_id):
            return run
    return None


class ProgressTable:
    """Prints the header once and each round once, when it is finished."""

    def __init__(self, out: TextIO = sys.stdout, note: Callable[[str], None] | None = None) -> None:
        self.out = out
        self.printed: set[int] = set()
        self.header_done = False

    def update(self, rounds: list[RoundView]) -> None:
        for view in rounds:
            if view.finished_at is None or view.number in self.printed:
                continue
            if not self.header_done:
                print(_HEADER, file=self.out, flush=True)
                self.header_done = True
            print(format_round(view), file=self.out, flush=True)
            for c in view.contributions:
                if c.error:
                    print(f"{'':>7}{c.site}: {c.status!s} ({c.error})", file=self.out, flush=True)
            self.printed.add(view.number)
