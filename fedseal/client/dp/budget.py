"""The check before every round: would the planned steps keep the site within its budget?

A site whose projected ε exceeds its budget trains nothing and answers "budget exhausted". A round
that was already charged (a retry) is not trained again either: training again would release a
second noisy update of the same round.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fedseal.privacy.events import DpEvent

from .accountant_store import AccountantStore
from .settings import DpSettings

__all__ = ["BudgetDecision", "BudgetReason", "check_round"]


class BudgetReason(StrEnum):
    """Why a round may or may not train; the strings go on the wire, so never rename one."""

    WITHIN_BUDGET = "within budget"
    BUDGET_EXHAUSTED = "budget exhausted"
    ALREADY_CHARGED = "round already charged"


@dataclass(frozen=True)
class BudgetDecision:
    """ε before and after the planned round, at the site's δ and with its accountant."""

    allowed: bool
    epsilon_now: float
    epsilon_after: float
    budget: float
    reason: BudgetReason


def check_round(
    store: AccountantStore,
    planned_event: DpEvent,
    settings: DpSettings,
    *,
    run_id: int | None = None,
    round_number: int | None = None,
) -> BudgetDecision:
    """Allowed only if ε after `planned_event`, composed after the site's whole history, is at
    most `settings.epsilon`; with `run_id` and `round_number`, a round already charged is
    refused as well (`epsilon_after` is then the current ε: nothing more is spent)."""
    delta = settings.require_delta()
    now = store.spent_epsilon(delta, settings.accountant)
    already = (
        run_id is not None
        and round_number is not None
        and store.charge_for(run_id, round_number) is not None
    )
    if already:
        return BudgetDecision(False, now, now, settings.epsilon, BudgetReason.ALREADY_CHARGED)
    after = store.projected_epsilon(planned_event, delta, settings.accountant)
    allowed = after <= settings.epsilon
    reason = BudgetReason.WITHIN_BUDGET if allowed else BudgetReason.BUDGET_EXHAUSTED
    return BudgetDecision(allowed, now, after, settings.epsilon, reason)
