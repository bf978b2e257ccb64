"""One round of DP training as the site worker runs it: plan, check, train, charge, report.

The order is what makes the budget hold (docs/privacy.md, "What is charged, and when"):

1. σ for the run: the configured one, or calibrated once for the run's remaining planned rounds
   (`noise_for_run`; kept in the store, so a restarted site uses the same σ);
2. `check_round`: ε after this round's planned steps, composed after the site's whole history,
   must stay within the budget, and the round must not have been charged already;
3. train (`train_dp_on`) — nothing else in this module touches the records;
4. `record` the released event (written and fsynced) BEFORE the update leaves the site;
5. the round's ledger entry for the coordinator (`charged_report` / `declined_report`).

A round the site will not train is declined, never half-trained: the answer says why, and the
report says what it would have cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedseal.privacy.events import DpEvent

from .accountant_store import AccountantStore
from .budget import BudgetDecision, BudgetReason, check_round
from .calibration import noise_for_run
from .errors import CalibrationError
from .report import PrivacyReport, charged_report, declined_report
from .settings import MAX_NOISE_MULTIPLIER, DpSettings

if TYPE_CHECKING:
    import torch

    from fedseal.client.training import TrainingInputs, TrainSettings

    from .trainer import DpTrainResult

__all__ = ["AlreadyCharged", "PrivateRound", "plan_private_round", "train_private_round"]


class AlreadyCharged(RuntimeError):
    """The round was trained and charged before: training it again would release fresh noise."""


@dataclass(frozen=True)
class PrivateRound:
    """What a round under DP did: trained (with its result) or declined (with the reason)."""

    report: PrivacyReport
    result: DpTrainResult | None = None
    reason: str = ""

    @property
    def trained(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class _Plan:
    event: DpEvent
    decision: BudgetDecision
    detail: str = ""


def plan_private_round(
    store: AccountantStore,
    dp: DpSettings,
    *,
    run_id: int,
    round_number: int,
    rounds_planned: int,
    sample_rate: float,
    steps: int,
) -> _Plan:
    """The round's planned event and whether the budget allows it (nothing is charged here).

    Raises `AlreadyCharged` for a round this site already trained.
    """
    detail = ""
    try:
        sigma = noise_for_run(
            store,
            dp,
            run_id=run_id,
            sample_rate=sample_rate,
            steps_per_round=steps,
            rounds_remaining=max(1, rounds_planned - round_number + 1),
        )
    except CalibrationError as exc:
        # Even the most noise calibration may choose overshoots the run's target: decline, and
        # report the cheapest round there could have been.
        sigma, detail = MAX_NOISE_MULTIPLIER, str(exc)
    planned = DpEvent(sigma, sample_rate, steps)
    decision = check_round(store, planned, dp, run_id=run_id, round_number=round_number)
    if decision.reason is BudgetReason.ALREADY_CHARGED:
        raise AlreadyCharged(
            f"run {run_id} round {round_number} was already trained and charged; "
            "it is not trained again"
        )
    if detail and decision.allowed:
        decision = BudgetDecision(
            False,
            decision.epsilon_now,
            decision.epsilon_after,
            decision.budget,
            BudgetReason.BUDGET_EXHAUSTED,
        )
    return _Plan(planned, decision, detail)


def train_private_round(
    model: torch.nn.Module,
    inputs: TrainingInputs,
    settings: TrainSettings,
    dp: DpSettings,
    store: AccountantStore,
    device: torch.device | str,
    *,
    run_id: int,
    round_number: int,
    rounds_planned: int,
    optimizer_state: dict[str, Any] | None = None,
) -> PrivateRound:
    """Train one round under DP if the budget allows, charge it, and return its ledger entry."""
    from .trainer import poisson_sample_rate, train_dp_on

    plan = plan_private_round(
        store,
        dp,
        run_id=run_id,
        round_number=round_number,
        rounds_planned=rounds_planned,
        sample_rate=poisson_sample_rate(settings.batch_size, inputs.n),
        steps=settings.steps,
    )
    if not plan.decision.allowed:
        reason = (
            f"{BudgetReason.BUDGET_EXHAUSTED}: ε would reach {plan.decision.epsilon_after:.4g} "
            f"> budget {plan.decision.budget:g} (spent {plan.decision.epsilon_now:.4g})"
        )
        if plan.detail:
            reason = f"{BudgetReason.BUDGET_EXHAUSTED}: {plan.detail}"
        return PrivateRound(declined_report(plan.decision, plan.event, dp), None, reason)
    result = train_dp_on(
        model,
        inputs,
        settings,
        dp,
        plan.event.noise_multiplier,
        device,
        optimizer_state=optimizer_state,
    )
    store.record(result.event, run_id, round_number, release_id=result.release_id)
    return PrivateRound(charged_report(store, result.event, dp), result)
