"""What a site tells the coordinator about a round's privacy cost, for its `privacy_ledger`.

The field names equal the keyword arguments of the coordinator's `Registry.record_privacy`, so the
round loop can pass them through. Every ε here can be recomputed from the mechanism fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent
from fedseal.privacy.figures import PrivacyFigures
from fedseal.privacy.status import PrivacyStatus

from .accountant_store import AccountantStore
from .budget import BudgetDecision
from .settings import DpSettings

__all__ = ["PrivacyReport", "charged_report", "declined_report"]


@dataclass(frozen=True)
class PrivacyReport(PrivacyFigures):
    """One site's privacy entry for one round (`PrivacyFigures`), as its statement sends it."""

    def as_fields(self) -> dict[str, str | float | int]:
        """Plain values (status and accountant as strings) for a message record."""
        fields = asdict(self)
        fields["status"] = str(self.status)
        fields["accountant"] = str(self.accountant)
        return fields


def charged_report(store: AccountantStore, event: DpEvent, settings: DpSettings) -> PrivacyReport:
    """The entry of a round that trained; call after `store.record(event, ...)`."""
    delta = settings.require_delta()
    return _report(
        PrivacyStatus.CHARGED,
        event,
        settings,
        epsilon_round=epsilon_of([event], delta, settings.accountant),
        epsilon_cumulative=store.spent_epsilon(delta, settings.accountant),
        budget=settings.epsilon,
    )


def declined_report(
    decision: BudgetDecision, planned: DpEvent, settings: DpSettings
) -> PrivacyReport:
    """The entry of a round refused by `check_round`: nothing spent."""
    return _report(
        PrivacyStatus.DECLINED,
        planned,
        settings,
        epsilon_round=0.0,
        epsilon_cumulative=decision.epsilon_now,
        budget=decision.budget,
    )


def _report(
    status: PrivacyStatus,
    event: DpEvent,
    settings: DpSettings,
    *,
    epsilon_round: float,
    epsilon_cumulative: float,
    budget: float,
) -> PrivacyReport:
    """An entry with `event`'s mechanism and the site's clipping norm, δ and accountant."""
    return PrivacyReport(
        status=status,
        noise_multiplier=event.noise_multiplier,
        sample_rate=event.sample_rate,
        steps=event.steps,
        max_grad_norm=settings.max_grad_norm,
        delta=settings.require_delta(),
        accountant=Accountant(settings.accountant),
        epsilon_round=epsilon_round,
        epsilon_cumulative=epsilon_cumulative,
        budget=budget,
    )
