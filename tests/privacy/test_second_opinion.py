"""dp-accounting's second opinion on ε: it agrees with Opacus where both compute the same bound,
its PLD figure is below every honest accountant's, and what it is built from is the ledger's."""

from __future__ import annotations

import logging

import dp_accounting
import pytest

from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.privacy.second_opinion import (
    PLD_INTERVALS,
    RDP_AGREEMENT,
    SecondOpinion,
    dp_accounting_event,
    second_opinion,
)

DELTA = 1e-5
HISTORIES = {
    "audit ledger, 6 rounds": [DpEvent(1.1, 32 / 600, 40)] * 6,
    "docs/privacy.md's long run": [DpEvent(1.0, 0.01, 1000)],
    "calibrated for ε = 1": [DpEvent(1.064, 0.0107, 50)],
    "σ and q change between runs": [DpEvent(0.8, 0.1, 100), DpEvent(1.2, 0.05, 200)],
    "large σ, few steps": [DpEvent(5.0, 0.01, 10)],
}


@pytest.mark.parametrize("events", HISTORIES.values(), ids=HISTORIES.keys())
def test_honest_figures_pass_both_opinions(events: list[DpEvent]) -> None:
    """Opacus' RDP and PRV figures agree with dp-accounting's RDP and PLD, and neither is below
    the PLD floor; the PLD, the tight bound, is below RDP."""
    rdp = epsilon_of(events, DELTA, Accountant.RDP)
    prv = epsilon_of(events, DELTA, Accountant.PRV)
    opinion = second_opinion(events, DELTA, [rdp, prv])
    assert opinion.agrees(Accountant.RDP, rdp), (rdp, opinion)
    assert opinion.agrees(Accountant.PRV, prv), (prv, opinion)
    assert opinion.floor <= min(rdp, prv)
    assert opinion.pld < rdp and opinion.pld <= opinion.rdp


def test_known_values() -> None:
    """σ = 1, q = 0.01, 1,000 steps at δ = 1e-5 (docs/privacy.md: RDP 2.10, PRV 1.84)."""
    opinion = second_opinion([DpEvent(1.0, 0.01, 1000)], DELTA)
    assert opinion.rdp == pytest.approx(2.1014, abs=1e-3)
    assert opinion.pld == pytest.approx(1.829, abs=2e-3)
    assert opinion.pld_interval == PLD_INTERVALS[0]


def test_rdp_at_opacus_orders_is_opacus_figure() -> None:
    """Where neither library leaves an order out, the two RDP figures are the same number."""
    events = [DpEvent(1.1, 32 / 600, 40)]
    assert second_opinion(events, DELTA).rdp == pytest.approx(
        epsilon_of(events, DELTA, Accountant.RDP), rel=1e-9
    )


def test_the_coarse_pld_is_refined_when_it_is_above_a_figure() -> None:
    """Many small steps: the coarse grid puts the PLD above Opacus' PRV figure (an honest upper
    bound); the fine grid brings it below, so no honest figure is reported."""
    events = [DpEvent(10.0, 0.001, 10_000)]
    prv = epsilon_of(events, DELTA, Accountant.PRV)
    coarse = second_opinion(events, DELTA)
    assert coarse.floor > prv
    refined = second_opinion(events, DELTA, [prv])
    assert refined.pld_interval == PLD_INTERVALS[1]
    assert refined.pld < coarse.pld and refined.floor <= prv


def test_a_figure_off_the_same_kind_does_not_agree() -> None:
    opinion = second_opinion([DpEvent(1.1, 32 / 600, 40)], DELTA)
    assert not opinion.agrees(Accountant.RDP, opinion.rdp * (1 + 2 * RDP_AGREEMENT))
    assert not opinion.agrees(Accountant.RDP, opinion.rdp * (1 - 2 * RDP_AGREEMENT))
    assert not opinion.agrees(Accountant.PRV, opinion.pld + 0.1)
    assert opinion.same_kind(Accountant.RDP) == opinion.rdp
    assert opinion.same_kind(Accountant.PRV) == opinion.pld


def test_no_events_cost_nothing_and_delta_is_checked() -> None:
    assert second_opinion([], DELTA) == SecondOpinion(0.0, 0.0, PLD_INTERVALS[0])
    assert second_opinion([], DELTA).floor == 0.0
    with pytest.raises(ValueError, match="delta"):
        second_opinion([DpEvent(1.0, 0.01, 1)], 1.0)


def test_the_event_is_the_ledgers_mechanism_composed() -> None:
    """Each merged (σ, q, steps) is a self-composed Poisson-sampled Gaussian, in order."""
    event = dp_accounting_event([DpEvent(1.1, 0.05, 40), DpEvent(0.9, 0.1, 5)])
    assert event == dp_accounting.ComposedDpEvent(
        [
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.1)), 40
            ),
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(0.9)), 5
            ),
        ]
    )


def test_orders_left_out_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """dp-accounting notes each RDP order it drops; the audit's output stays its own."""
    with caplog.at_level(logging.WARNING):
        second_opinion([DpEvent(0.8, 0.1, 100)], DELTA)
    assert not [r for r in caplog.records if "failed to converge" in r.getMessage()]
