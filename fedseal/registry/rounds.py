"""Writing rounds: open one with its sampled sites, record what each site did, close it.

A round's counts (sampled, participants, dropped) follow every change at once, so a live view
sees them while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from .checks import (
    check_count,
    check_digest,
    check_duration,
    check_enum,
    check_final,
    check_metric,
    check_name,
    check_names,
    check_sha256,
    check_text,
    given,
)
from .core import RegistryCore, get_record
from .errors import AlreadyFinished, RecordConflict, RecordNotFound
from .schema import Contribution, Round, Run, Site
from .statuses import ContributionStatus, RoundStatus, RunStatus, SiteStatus

__all__ = ["RoundsMixin", "close_round"]


class RoundsMixin(RegistryCore):
    """The registry's round writes."""

    def start_round(self, run_id: int, number: int, sampled_sites: Sequence[str]) -> int:
        """Open round ``number`` of a running run with one ``sampled`` row per sampled site."""
        number = check_count(number, "round number", minimum=1)
        names = check_names(sampled_sites, "sampled_sites")
        with self._write() as session:
            run = get_record(session, Run, run_id)
            if run.status is not RunStatus.RUNNING:
                raise RecordConflict(f"run {run_id} is {run.status}, not running")
            taken = session.scalar(
                select(Round.id).where(Round.run_id == run_id, Round.number == number)
            )
            if taken is not None:
                raise RecordConflict(f"run {run_id} already has a round {number}")
            site_ids = self._site_ids(session, names)
            revoked = session.scalars(
                select(Site.name).where(
                    Site.id.in_(site_ids.values()), Site.status == SiteStatus.REVOKED
                )
            ).all()
            if revoked:
                raise RecordConflict(f"revoked sites cannot be sampled: {', '.join(revoked)}")
            round_ = Round(
                run_id=run_id,
                number=number,
                status=RoundStatus.RUNNING,
                sampled=len(names),
                participants=0,
                dropped=0,
                started_at=self._now(),
            )
            round_.contributions = [
                Contribution(site_id=site_ids[name], status=ContributionStatus.SAMPLED)
                for name in names
            ]
            session.add(round_)
            session.flush()
            return round_.id

    def record_contribution(
        self,
        round_id: int,
        site: str,
        *,
        status: ContributionStatus | str | None = None,
        num_examples: int | None = None,
        train_loss: float | None = None,
        train_seconds: float | None = None,
        eval_loss: float | None = None,
        eval_accuracy: float | None = None,
        eval_auc: float | None = None,
        eval_examples: int | None = None,
        clipped_coordinates: int | None = None,
        adapter_digest: str | None = None,
        update_digest: str | None = None,
        error: str | None = None,
    ) -> None:
        """Create or update ``site``'s row for the round; arguments left as None keep their value.

        ``update_digest`` is the SHA-256 (hex) of the update the site sent, the one its signed
        privacy statement names.

        A site that was not sampled gets a row too (and is registered if new),
        which needs a status. Non-finite metrics are recorded as unknown. The
        round's counts follow at once, so a live view sees them while it runs.
        """
        name = check_name(site, "site")
        changes: dict[str, object] = {}
        if status is not None:
            changes["status"] = check_enum(ContributionStatus, status, "contribution status")
        changes |= given(
            check_count,
            num_examples=num_examples,
            eval_examples=eval_examples,
            clipped_coordinates=clipped_coordinates,
        )
        changes |= given(
            check_metric,
            train_loss=train_loss,
            eval_loss=eval_loss,
            eval_accuracy=eval_accuracy,
            eval_auc=eval_auc,
        )
        changes |= given(check_duration, train_seconds=train_seconds)
        changes |= given(check_digest, adapter_digest=adapter_digest)
        changes |= given(check_sha256, update_digest=update_digest)
        changes |= given(check_text, error=error)
        with self._write() as session:
            round_ = _round_with_contributions(session, round_id)
            site_id = self._site_ids(session, [name])[name]
            row = next((row for row in round_.contributions if row.site_id == site_id), None)
            if row is None:
                if status is None:
                    raise RecordConflict(
                        f"site {name} has no row in round {round_id}; a new row needs a status"
                    )
                row = Contribution(site_id=site_id)
                round_.contributions.append(row)
            for field, value in changes.items():
                setattr(row, field, value)
            _tally(round_)

    def finish_round(
        self,
        round_id: int,
        *,
        status: RoundStatus | str,
        aggregate_digest: str | None = None,
        global_digest: str | None = None,
        loss: float | None = None,
        accuracy: float | None = None,
        auc: float | None = None,
        global_accuracy: float | None = None,
        global_auc: float | None = None,
        error: str | None = None,
    ) -> None:
        """Close a round: sites that never answered become dropped, counts and duration are set."""
        final = check_final(RoundStatus, status, RoundStatus.RUNNING, "round status")
        changes = given(
            check_digest, aggregate_digest=aggregate_digest, global_digest=global_digest
        )
        changes |= given(
            check_metric,
            loss=loss,
            accuracy=accuracy,
            auc=auc,
            global_accuracy=global_accuracy,
            global_auc=global_auc,
        )
        changes |= given(check_text, error=error)
        now = self._now()
        with self._write() as session:
            round_ = _round_with_contributions(session, round_id)
            if round_.finished_at is not None:
                raise AlreadyFinished(f"round {round_id} already finished as {round_.status}")
            close_round(round_, final, now)
            for field, value in changes.items():
                setattr(round_, field, value)


def close_round(round_: Round, status: RoundStatus, now: datetime) -> None:
    """Mark silent sites dropped, then set status, end time, duration and counts."""
    for row in round_.contributions:
        if row.status is ContributionStatus.SAMPLED:
            row.status = ContributionStatus.DROPPED
    round_.status = status
    round_.finished_at = now
    round_.duration_s = max(0.0, (now - round_.started_at).total_seconds())
    _tally(round_)


def _tally(round_: Round) -> None:
    """sampled = every row; participants = contributed; dropped = neither contributed nor waiting.

    Once the round is closed nobody is waiting, so sampled = participants + dropped.
    """
    statuses = [row.status for row in round_.contributions]
    round_.sampled = len(statuses)
    round_.participants = statuses.count(ContributionStatus.CONTRIBUTED)
    round_.dropped = (
        round_.sampled - round_.participants - statuses.count(ContributionStatus.SAMPLED)
    )


def _round_with_contributions(session: Session, round_id: int) -> Round:
    check_count(round_id, "round id")
    found = (
        session.scalars(
            select(Round).where(Round.id == round_id).options(joinedload(Round.contributions))
        )
        .unique()
        .one_or_none()
    )
    if found is None:
        raise RecordNotFound(f"no round with id {round_id}")
    return found
