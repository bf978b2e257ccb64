"""Read-only snapshots handed to callers, so no ORM object ever leaves a session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .statuses import (
    Accountant,
    ContributionStatus,
    EventAction,
    PrivacyStatus,
    RoundStatus,
    RunStatus,
)

__all__ = ["ContributionView", "EventView", "PrivacyEntryView", "RoundView", "RunView"]


@dataclass(frozen=True, slots=True)
class RunView:
    """One run; ``rounds_completed`` counts its rounds with status completed."""

    id: int
    flower_run_id: str | None
    scenario: str
    protocol_mode: str
    config: dict[str, Any]
    status: RunStatus
    rounds_planned: int
    rounds_completed: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ContributionView:
    """One sampled site's record in one round."""

    site: str
    status: ContributionStatus
    num_examples: int | None
    train_loss: float | None
    train_seconds: float | None
    eval_loss: float | None
    eval_accuracy: float | None
    eval_auc: float | None
    eval_examples: int | None
    adapter_digest: str | None
    update_digest: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RoundView:
    """One round with its contributions, ordered by site name."""

    id: int
    run_id: int
    number: int
    status: RoundStatus
    sampled: int
    participants: int
    dropped: int
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    aggregate_digest: str | None
    global_digest: str | None
    loss: float | None
    accuracy: float | None
    auc: float | None
    global_accuracy: float | None
    global_auc: float | None
    error: str | None
    contributions: tuple[ContributionView, ...]


@dataclass(frozen=True, slots=True)
class PrivacyEntryView:
    """One privacy-ledger row: a site's DP spend (or refusal) in one round of one run.

    ``id`` is its position in the ledger chain. Rows written before migration 0003 have ids
    <= 0 and no site signature, hashes or countersignature.
    """

    id: int
    site: str
    run_id: int
    round_number: int
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
    created_at: datetime
    update_digest: str
    site_signature: bytes | None
    prev_hash: str | None
    entry_hash: str | None
    coordinator_signature: bytes | None


@dataclass(frozen=True, slots=True)
class EventView:
    """One ``events`` row: an operator action, at position ``id`` of the ledger chain."""

    id: int
    action: EventAction
    site: str | None
    run_id: int | None
    details: dict[str, Any]
    created_at: datetime
    prev_hash: str
    entry_hash: str
    coordinator_signature: bytes
