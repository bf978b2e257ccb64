"""Read-only snapshots handed to callers, so no ORM object ever leaves a session."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from fedseal.privacy.figures import PrivacyFigures

from .statuses import ContributionStatus, EventAction, RoundStatus, RunStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ContributionView",
    "EventView",
    "PrivacyEntryView",
    "RoundView",
    "RunView",
    "view_of",
]

_View = TypeVar("_View", bound="DataclassInstance")


def view_of(view: type[_View], row: object, **held: object) -> _View:
    """``view`` filled from the row's attributes of the same names, except the fields in ``held``.

    ``held`` gives the fields a view holds differently from its row: a site's name for its id,
    bytes for a database buffer, parsed JSON for its text, a count computed by the query.
    """
    names = [field.name for field in fields(view)]
    unknown = set(held) - set(names)
    if unknown:
        raise TypeError(f"{view.__name__} has no field {', '.join(sorted(unknown))}")
    return view(**{name: held[name] if name in held else getattr(row, name) for name in names})


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
    clipped_coordinates: int | None
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
class PrivacyEntryView(PrivacyFigures):
    """One privacy-ledger row: a site's DP spend (or refusal) in one round of one run.

    The figures (status, mechanism, ε, budget) are :class:`PrivacyFigures`'; ``id`` is the
    row's position in the ledger chain. Rows written before migration 0003 have ids <= 0 and
    no site signature, hashes or countersignature.
    """

    id: int
    site: str
    run_id: int
    round_number: int
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
