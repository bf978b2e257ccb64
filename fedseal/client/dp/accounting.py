"""ε of a composition of DP-SGD events, evaluated with Opacus' own accountants.

The site never keeps a live accountant object: it rebuilds one from its stored events whenever it
needs ε, so the figure is exactly what `opacus.accountants.RDPAccountant` (or `PRVAccountant`)
reports for all those steps composed, and an auditor can recompute it from the same numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant

from .events import DpEvent, merge_events
from .settings import Accountant

__all__ = ["PRV_EPS_ERROR", "epsilon_of", "make_accountant"]

PRV_EPS_ERROR = 0.01
"""Discretisation error allowed for PRV; Opacus then reports the upper end of its ε interval."""


def make_accountant(kind: Accountant, events: Sequence[DpEvent] = ()) -> IAccountant:
    """A fresh Opacus accountant of `kind` holding `events` (merged) as its history."""
    accountant: IAccountant = RDPAccountant() if kind is Accountant.RDP else PRVAccountant()
    accountant.history = [event.as_tuple() for event in merge_events(events)]
    return accountant


def epsilon_of(events: Sequence[DpEvent], delta: float, kind: Accountant) -> float:
    """ε at `delta` for every step of `events` composed; 0 for no events.

    RDP uses Opacus' default orders, so anyone reproduces the figure with
    `RDPAccountant().get_epsilon(delta)` on the same history.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not events:
        return 0.0
    accountant = make_accountant(Accountant(kind), events)
    with warnings.catch_warnings():
        # RDP warns when the best order is the largest one; the bound is still valid.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        if isinstance(accountant, PRVAccountant):
            value = accountant.get_epsilon(delta, eps_error=PRV_EPS_ERROR)
        else:
            value = accountant.get_epsilon(delta)
    value = float(value)
    if math.isnan(value):
        raise ArithmeticError(f"the {kind} accountant returned NaN for {len(events)} events")
    return value
