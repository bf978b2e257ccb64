"""ε of a composition of DP-SGD events, evaluated with Opacus' own accountants.

The site never keeps a live accountant object: it evaluates its stored events whenever it needs ε,
so the figure is exactly what `opacus.accountants.RDPAccountant` (or `PRVAccountant`) reports for
all those steps composed, and an auditor can recompute it from the same numbers.

RDP is computed with the accountant's own functions in the accountant's own order (per event
`compute_rdp(q, σ, steps, DEFAULT_ALPHAS)`, summed, then `get_privacy_spent`), with the one-step
RDP curve of each (q, σ) cached: Opacus recomputes it for every event on every call (~0.1 s per
event here), which made a budget check or a calibration cost seconds. The test suite checks the
result against `RDPAccountant.get_epsilon` itself.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from .accountant_kind import Accountant
from .events import DpEvent, merge_events

__all__ = ["PRV_EPS_ERROR", "Accountant", "epsilon_of", "make_accountant"]


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
    with warnings.catch_warnings():
        # RDP warns when the best order is the largest one; the bound is still valid.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        if Accountant(kind) is Accountant.PRV:
            value = make_accountant(Accountant.PRV, events).get_epsilon(
                delta, eps_error=PRV_EPS_ERROR
            )
        else:
            value = _rdp_epsilon(events, delta)
    value = float(value)
    if math.isnan(value):
        raise ArithmeticError(f"the {kind} accountant returned NaN for {len(events)} events")
    return value


def _rdp_epsilon(events: Sequence[DpEvent], delta: float) -> float:
    """`RDPAccountant().get_epsilon(delta)` for this history, with per-(q, σ) curves cached."""
    rdp = sum([_one_step_rdp(e.sample_rate, e.noise_multiplier) * e.steps for e in events])
    eps, _order = rdp_analysis.get_privacy_spent(
        orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta
    )
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _one_step_rdp(sample_rate: float, noise_multiplier: float) -> np.ndarray:
    curve: np.ndarray = rdp_analysis.compute_rdp(
        q=sample_rate,
        noise_multiplier=noise_multiplier,
        steps=1,
        orders=RDPAccountant.DEFAULT_ALPHAS,
    )
    curve.setflags(write=False)
    return curve
