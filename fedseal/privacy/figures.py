"""The figures of one site's privacy entry for one round, as the site reports and the ledger keeps.

The site that spends ε, the registry that records it and the auditor that recomputes it name
the same ten fields, so they are defined once: the entry's status, the DP-SGD mechanism, ε of
the round and cumulative, and the budget. Every ε can be recomputed from the mechanism fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from .accountant_kind import Accountant
from .status import PrivacyStatus

__all__ = ["PrivacyFigures"]


@dataclass(frozen=True, slots=True)
class PrivacyFigures:
    """One site's privacy cost for one round, and the mechanism that cost comes from.

    ``epsilon_round`` is ε of the round's steps alone; ``epsilon_cumulative`` is ε of every step
    the site has charged, composed (ε does not add up, so it grows by less than
    ``epsilon_round``). A declined round spent nothing: ``epsilon_round`` is 0 and the mechanism
    is the one the site would have used.
    """

    status: PrivacyStatus
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    accountant: Accountant
    epsilon_round: float
    epsilon_cumulative: float
    budget: float
