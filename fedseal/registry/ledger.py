"""The privacy ledger: each site's DP spend per round, as the sites sign it. Append-only.

Mixed into :class:`~fedseal.registry.Registry`; there is deliberately no method that
updates or deletes an entry, an event or the chain's index. Every entry is checked against the
site's signature and appended to the ledger chain (docs/ledger-format.md). Recording the same
entry twice (a retried report) is harmless; recording a different entry for the same
(run, round, site) is a conflict.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from fedseal.contract import ledger_codec
from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.status import PrivacyStatus

from .chain import ChainAppender, read_head
from .checks import (
    check_count,
    check_enum,
    check_name,
    check_non_negative,
    check_positive,
    check_sha256,
)
from .core import RegistryCore
from .errors import RecordConflict, RecordNotFound, StatementRefused
from .schema import Event, PrivacyEntry, Run, Site
from .statuses import SiteStatus
from .views import EventView, PrivacyEntryView, view_of

__all__ = ["PrivacyLedgerMixin", "enrolled_identity_key"]


class PrivacyLedgerMixin(RegistryCore):
    """Privacy-ledger methods of the registry."""

    def record_privacy(
        self,
        *,
        run_id: int,
        round_number: int,
        site: str,
        status: PrivacyStatus | str,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        max_grad_norm: float,
        delta: float,
        accountant: Accountant | str,
        epsilon_round: float,
        epsilon_cumulative: float,
        budget: float,
        update_digest: str,
        site_signature: bytes,
    ) -> int:
        """Append one site's signed entry for one round to the ledger chain; returns its id.

        ``epsilon_round`` is ε of this round's steps alone (0 for a declined round);
        ``epsilon_cumulative`` is ε of every step the site has charged, composed;
        ``update_digest`` the SHA-256 (hex) of the update it sent, "" when it sent none.
        ``site_signature`` is the site's identity-key signature over these fields as
        ``ledger_codec.site_statement`` encodes them (``STATEMENT_FIELDS``, with the run's
        Flower id): an unknown, unenrolled or revoked site, or a signature that does not
        verify with the site's enrolled key, raises :class:`StatementRefused` and nothing is
        written. The same entry recorded again returns the first one's id; a different one
        raises :class:`RecordConflict`. An entry whose cumulative ε exceeds its budget is still
        recorded (the ledger keeps what happened; an audit flags it).
        """
        name = check_name(site, "site")
        run_id = check_count(run_id, "run id", minimum=1)
        number = check_count(round_number, "round number", minimum=1)
        values: dict[str, object] = {
            "status": check_enum(PrivacyStatus, status, "privacy status"),
            "noise_multiplier": check_positive(noise_multiplier, "noise_multiplier"),
            "sample_rate": check_positive(sample_rate, "sample_rate", upper=1.0),
            "steps": check_count(steps, "steps", minimum=1),
            "max_grad_norm": check_positive(max_grad_norm, "max_grad_norm"),
            "delta": check_positive(delta, "delta", upper=1.0, open_upper=True),
            "accountant": check_enum(Accountant, accountant, "accountant"),
            "epsilon_round": check_non_negative(epsilon_round, "epsilon_round"),
            "epsilon_cumulative": check_non_negative(epsilon_cumulative, "epsilon_cumulative"),
            "budget": check_positive(budget, "budget"),
        }
        if values["status"] is PrivacyStatus.DECLINED and values["epsilon_round"] != 0.0:
            raise ValueError("a declined round spent nothing: epsilon_round must be 0")
        values["update_digest"] = (
            update_digest if update_digest == "" else check_sha256(update_digest, "update_digest")
        )
        if not isinstance(site_signature, bytes):
            raise TypeError("site_signature must be bytes")

        def record(session: Session, chain: ChainAppender) -> int:
            run = session.get(Run, run_id)
            if run is None:
                raise RecordNotFound(f"no run with id {run_id}")
            site_row = session.scalar(select(Site).where(Site.name == name))
            identity = enrolled_identity_key(site_row, name)
            if run.flower_run_id is None:
                raise StatementRefused(
                    f"run {run_id} has no Flower run id yet, so site {name}'s statement "
                    "cannot be checked"
                )
            statement = {
                "site": name,
                "flower_run_id": run.flower_run_id,
                "round_number": number,
                **{key: str(value) if key in _ENUMS else value for key, value in values.items()},
            }
            if not ledger_codec.verify_statement(identity, statement, site_signature):
                raise StatementRefused(
                    f"site {name}'s signature over its run {run_id} round {number} statement "
                    "does not verify with its enrolled identity key"
                )
            existing = session.scalar(
                select(PrivacyEntry).where(
                    PrivacyEntry.run_id == run_id,
                    PrivacyEntry.round_number == number,
                    PrivacyEntry.site_id == site_row.id,
                )
            )
            if existing is not None:
                if all(getattr(existing, key) == value for key, value in values.items()):
                    return existing.id
                raise RecordConflict(
                    f"site {name} already has a different privacy entry for run {run_id} "
                    f"round {number}; ledger entries are never changed"
                )
            entry = PrivacyEntry(
                site_id=site_row.id,
                run_id=run_id,
                round_number=number,
                site_signature=site_signature,
                **values,
            )
            return chain.append(entry, site=name, flower_run_id=run.flower_run_id)

        return self._chained(record)

    def privacy_ledger(
        self, run_id: int | None = None, site: str | None = None
    ) -> list[PrivacyEntryView]:
        """Ledger entries in the order they were recorded, optionally of one run and/or site."""
        query = select(PrivacyEntry).options(joinedload(PrivacyEntry.site))
        if run_id is not None:
            query = query.where(PrivacyEntry.run_id == check_count(run_id, "run id", minimum=1))
        if site is not None:
            query = query.join(Site).where(Site.name == check_name(site, "site"))
        with self._read() as session:
            return [_view(row) for row in session.scalars(query.order_by(PrivacyEntry.id))]

    def events(self, site: str | None = None, run_id: int | None = None) -> list[EventView]:
        """The chain's events in order, optionally of one site and/or run."""
        query = select(Event).order_by(Event.id)
        if site is not None:
            query = query.where(Event.site == check_name(site, "site"))
        if run_id is not None:
            query = query.where(Event.run_id == check_count(run_id, "run id", minimum=1))
        with self._read() as session:
            return [_event_view(row) for row in session.scalars(query)]

    def chain_head(self) -> tuple[int, str] | None:
        """The ledger chain's last entry as (seq, entry_hash), or None while it is empty."""
        with self._read() as session:
            return read_head(session)

    def site_epsilon_spent(self, site: str) -> float | None:
        """Cumulative ε of the site's latest charged entry; None if it never trained under DP."""
        name = check_name(site, "site")
        with self._read() as session:
            return session.scalar(
                select(PrivacyEntry.epsilon_cumulative)
                .join(Site)
                .where(Site.name == name, PrivacyEntry.status == PrivacyStatus.CHARGED)
                .order_by(PrivacyEntry.id.desc())
                .limit(1)
            )

    def exhausted_sites(self, run_id: int) -> list[str]:
        """Sites that declined a round of this run for lack of budget: not worth sampling again
        in it (σ, q and steps stay the same within a run, so they would decline again)."""
        run_id = check_count(run_id, "run id", minimum=1)
        with self._read() as session:
            names = session.scalars(
                select(Site.name)
                .join(PrivacyEntry, PrivacyEntry.site_id == Site.id)
                .where(
                    PrivacyEntry.run_id == run_id,
                    PrivacyEntry.status == PrivacyStatus.DECLINED,
                )
                .distinct()
            )
            return sorted(names)


_ENUMS = frozenset({"status", "accountant"})


def enrolled_identity_key(site: Site | None, name: str) -> bytes:
    """The identity key the site signs with now, or :class:`StatementRefused`."""
    if site is None or site.public_key is None:
        raise StatementRefused(f"site {name} is not enrolled; its statements cannot be checked")
    if site.status is SiteStatus.REVOKED:
        raise StatementRefused(f"site {name} is revoked; its statements are refused")
    try:
        return SitePublicKeys.from_bundle(name, bytes(site.public_key)).identity
    except SiteKeyError as exc:
        raise StatementRefused(str(exc)) from None


def _view(row: PrivacyEntry) -> PrivacyEntryView:
    return view_of(
        PrivacyEntryView,
        row,
        site=row.site.name,
        site_signature=_bytes(row.site_signature),
        coordinator_signature=_bytes(row.coordinator_signature),
    )


def _event_view(row: Event) -> EventView:
    details: dict[str, Any] = json.loads(row.details)
    return view_of(
        EventView, row, details=details, coordinator_signature=bytes(row.coordinator_signature)
    )


def _bytes(value: bytes | None) -> bytes | None:
    """A signature as bytes (drivers may hand back a buffer), or None for a pre-chain row."""
    return None if value is None else bytes(value)
