"""ε of the same DP-SGD events from a second, independent library: Google's `dp-accounting`.

Recomputing a recorded ε with the accountant that produced it shows that the arithmetic was
repeated, not that it is right: a wrong or patched accountant agrees with itself. dp-accounting is
a separate implementation, so the auditor asks it too, for two figures:

- **RDP** (`dp_accounting.rdp.RdpAccountant`) at Opacus' default orders: the same kind of bound
  as Opacus' RDP accountant, so an RDP figure must agree with it within `RDP_AGREEMENT`;
- **PLD** (`dp_accounting.pld.PLDAccountant`, pessimistic): the tight bound, above the true ε
  only by its discretisation. RDP and PRV (its upper end) are upper bounds of the true ε, so no
  honest figure is below the PLD's, less `PLD_SLACK_REL` and `PLD_SLACK_ABS`; a PRV figure must
  agree with it within `PRV_AGREEMENT`.

Each `DpEvent` becomes dp-accounting's `PoissonSampledDpEvent(q, GaussianDpEvent(σ))`
self-composed `steps` times; the (merged) events are composed in order; neighbours are
add/remove-one, as in Opacus. The PLD is evaluated on a grid of `PLD_INTERVALS[0]` and again on
the finer `PLD_INTERVALS[1]` when the coarse figure is above one it is compared with (the coarse
grid over-states ε by up to a few percent for long histories of small steps, and the finer one
costs about ten times as much). This is the only module of fedseal that imports dp_accounting.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import RDPAccountant

from .accountant_kind import Accountant
from .accounting import PRV_EPS_ERROR
from .events import DpEvent, merge_events

__all__ = [
    "PLD_INTERVALS",
    "PLD_SLACK_ABS",
    "PLD_SLACK_REL",
    "PRV_AGREEMENT",
    "RDP_AGREEMENT",
    "SecondOpinion",
    "dp_accounting_event",
    "second_opinion",
]

PLD_INTERVALS = (1e-3, 1e-4)
"""The PLD's value discretisation intervals: the coarse one, and the fine one used when the coarse
figure is above a figure it is compared with (dp-accounting's own default is 1e-4)."""

PLD_SLACK_REL = 0.01
PLD_SLACK_ABS = 0.005
"""How far below the PLD figure an honest ε may be: the PLD's discretisation error, which on the
fine grid was measured under 0.01 % above ε = 1 and up to 0.0023 at ε ≈ 0.03
(docs/benchmarks.md)."""

RDP_AGREEMENT = 0.10
"""Relative: Opacus' RDP figure against dp-accounting's at the same orders. Both are valid RDP
bounds that part where their fractional-order series differ (dp-accounting drops orders whose
series does not converge): measured up to 1.1 % apart for ε ≤ 20, 6.3 % at ε = 43, dp-accounting
the higher."""

PRV_AGREEMENT = 2 * PRV_EPS_ERROR + PLD_SLACK_ABS
"""Absolute, plus `PLD_SLACK_REL` of the PLD figure: Opacus' PRV (the upper end of an interval
of width `PRV_EPS_ERROR` each side) against dp-accounting's PLD, both tight accountants."""

_ORDERS = tuple(RDPAccountant.DEFAULT_ALPHAS)
_Mechanisms = tuple[tuple[float, float, int], ...]


class _ExpectedNotes(logging.Filter):
    """dp-accounting logs, through absl, every RDP order it leaves out because its series does not
    converge; leaving it out only makes the bound larger, so the note is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_ExpectedNotes())


@dataclass(frozen=True, slots=True)
class SecondOpinion:
    """dp-accounting's ε of one history at one δ: RDP (Opacus' orders) and PLD (pessimistic)."""

    rdp: float
    pld: float
    pld_interval: float

    @property
    def floor(self) -> float:
        """The lowest ε an honest accountant reports for these events: the PLD less its slack."""
        return max(0.0, self.pld * (1 - PLD_SLACK_REL) - PLD_SLACK_ABS)

    def same_kind(self, kind: Accountant) -> float:
        """dp-accounting's figure to hold `kind`'s against: RDP for RDP, PLD for PRV."""
        return self.rdp if Accountant(kind) is Accountant.RDP else self.pld

    def tolerance(self, kind: Accountant) -> float:
        """How far `kind`'s figure may be from `same_kind(kind)`, absolutely."""
        if Accountant(kind) is Accountant.RDP:
            return RDP_AGREEMENT * self.rdp
        return PRV_AGREEMENT + PLD_SLACK_REL * self.pld

    def agrees(self, kind: Accountant, figure: float) -> bool:
        """True when `figure`, from `kind`'s accountant, is within tolerance of dp-accounting."""
        return abs(figure - self.same_kind(kind)) <= self.tolerance(kind)


def dp_accounting_event(events: Iterable[DpEvent]) -> Any:
    """The history as one dp-accounting event: each (σ, q, steps) a self-composed Poisson-
    sampled Gaussian, composed in order."""
    return dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(
                    e.sample_rate, dp_accounting.GaussianDpEvent(e.noise_multiplier)
                ),
                e.steps,
            )
            for e in events
        ]
    )


def second_opinion(
    events: Sequence[DpEvent], delta: float, compared_with: Iterable[float] = ()
) -> SecondOpinion:
    """dp-accounting's RDP and PLD ε at `delta` for every step of `events` composed.

    `compared_with` are the figures the PLD will be held against: when the coarse PLD figure is
    above one of them, it is evaluated again on the fine grid. No events: 0 for both.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    mechanisms: _Mechanisms = tuple(e.as_tuple() for e in merge_events(events))
    if not mechanisms:
        return SecondOpinion(0.0, 0.0, PLD_INTERVALS[0])
    coarse, fine = PLD_INTERVALS
    pld = _pld_epsilon(mechanisms, delta, coarse)
    interval = coarse
    if any(pld > figure for figure in compared_with):
        pld, interval = _pld_epsilon(mechanisms, delta, fine), fine
    return SecondOpinion(_rdp_epsilon(mechanisms, delta), pld, interval)


def _events(mechanisms: _Mechanisms) -> list[DpEvent]:
    return [DpEvent(sigma, q, steps) for sigma, q, steps in mechanisms]


@functools.lru_cache(maxsize=65536)
def _rdp_epsilon(mechanisms: _Mechanisms, delta: float) -> float:
    accountant = RdpAccountant(orders=_ORDERS)
    accountant.compose(dp_accounting_event(_events(mechanisms)))
    return _checked(accountant.get_epsilon(delta), "RDP")


@functools.lru_cache(maxsize=32)
def _pld(mechanisms: _Mechanisms, interval: float) -> Any:
    """The composed PLD (the costly part), kept for the next δ asked of the same history; a few
    only, since one takes up to a few MB (the ε figures are kept apart, many more of them)."""
    accountant = PLDAccountant(value_discretization_interval=interval)
    accountant.compose(dp_accounting_event(_events(mechanisms)))
    return accountant


@functools.lru_cache(maxsize=65536)
def _pld_epsilon(mechanisms: _Mechanisms, delta: float, interval: float) -> float:
    return _checked(_pld(mechanisms, interval).get_epsilon(delta), "PLD")


def _checked(value: Any, what: str) -> float:
    number = float(value)
    if math.isnan(number) or number < 0:
        raise ArithmeticError(f"dp-accounting's {what} accountant returned {number}")
    return number
