"""Sites' privacy audit statements on the ledger chain: append one, read them back. Append-only.

Mixed into :class:`~fedseal.registry.Registry`. A site's empirical privacy audit of a run's
global model (``fedseal.contract.audit_statement``) is checked like its round statements are:
the site must be enrolled and active and its signature must verify with its enrolled identity
key. It must also name a model the run made: the run (by its Flower id) and a round of it whose
global adapter digest is the one the site attacked. It is then appended to the chain as a
``privacy_audit`` event whose details are the statement's fields and the signature; attaching
the same statement again is a no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedseal.contract import ledger_codec
from fedseal.contract.audit_statement import (
    AuditStatementError,
    PrivacyAuditStatement,
    SignedAuditStatement,
)

from .chain import ChainAppender
from .checks import check_count, check_name
from .core import RegistryCore
from .errors import RecordNotFound, StatementRefused
from .ledger import enrolled_identity_key
from .schema import Event, Round, Run, Site
from .statuses import EventAction

__all__ = ["AuditRecorded", "PrivacyAuditView", "PrivacyAuditsMixin"]


@dataclass(frozen=True, slots=True)
class AuditRecorded:
    """Where an attached statement is on the chain, and whether this call appended it."""

    seq: int
    run_id: int
    added: bool


@dataclass(frozen=True, slots=True)
class PrivacyAuditView:
    """One ``privacy_audit`` chain entry, its statement parsed (as stored: not re-verified)."""

    seq: int
    site: str
    run_id: int
    statement: PrivacyAuditStatement
    signature: bytes
    created_at: datetime


def _details(signed: SignedAuditStatement) -> dict[str, object]:
    return {"statement": signed.statement.fields(), "signature": signed.signature.hex()}


class PrivacyAuditsMixin(RegistryCore):
    """Privacy-audit methods of the registry."""

    def record_privacy_audit(self, signed: SignedAuditStatement) -> AuditRecorded:
        """Append a site's signed privacy audit statement to the ledger chain.

        Raises :class:`RecordNotFound` when no run has the statement's Flower run id, and
        :class:`StatementRefused` when the site is unknown, unenrolled or revoked, the signature
        does not verify with its enrolled identity key, or the run has no round of that number
        whose global adapter digest is the statement's. Nothing is written then.
        """
        if not isinstance(signed, SignedAuditStatement):
            raise TypeError("signed must be a SignedAuditStatement")
        statement = signed.statement
        name = check_name(statement.site, "site")
        details = _details(signed)

        def record(session: Session, chain: ChainAppender) -> AuditRecorded:
            run = session.scalar(
                select(Run)
                .where(Run.flower_run_id == statement.flower_run_id)
                .order_by(Run.id.desc())
                .limit(1)
            )
            if run is None:
                raise RecordNotFound(f"no run with Flower run id {statement.flower_run_id}")
            identity = enrolled_identity_key(
                session.scalar(select(Site).where(Site.name == name)), name
            )
            if not signed.verify(identity):
                raise StatementRefused(
                    f"site {name}'s signature over its privacy audit of run {run.id} does not "
                    "verify with its enrolled identity key"
                )
            number = statement.applied_round
            digest = session.scalar(
                select(Round.global_digest).where(Round.run_id == run.id, Round.number == number)
            )
            if digest != statement.adapter_digest:
                held = "no round of that number" if digest is None else f"global digest {digest}"
                raise StatementRefused(
                    f"site {name}'s privacy audit names run {run.id} round {number} with adapter "
                    f"digest {statement.adapter_digest}, but the registry holds {held}"
                )
            text = ledger_codec.canonical_json(details).decode("utf-8")
            existing = session.scalar(
                select(Event.id).where(
                    Event.action == EventAction.PRIVACY_AUDIT,
                    Event.site == name,
                    Event.run_id == run.id,
                    Event.details == text,
                )
            )
            if existing is not None:
                return AuditRecorded(existing, run.id, added=False)
            seq = chain.event(EventAction.PRIVACY_AUDIT, site=name, run_id=run.id, details=details)
            return AuditRecorded(seq, run.id, added=True)

        return self._chained(record)

    def privacy_audits(
        self, site: str | None = None, run_id: int | None = None
    ) -> list[PrivacyAuditView]:
        """The attached privacy audit statements in chain order, optionally of one site or run;
        an entry whose details do not parse is skipped (`fl-audit` reports it)."""
        query = select(Event).where(Event.action == EventAction.PRIVACY_AUDIT).order_by(Event.id)
        if site is not None:
            query = query.where(Event.site == check_name(site, "site"))
        if run_id is not None:
            query = query.where(Event.run_id == check_count(run_id, "run id", minimum=1))
        found = []
        with self._read() as session:
            for row in session.scalars(query):
                try:
                    raw = json.loads(row.details)
                    parsed = PrivacyAuditStatement.from_fields(raw["statement"])
                    signature = bytes.fromhex(raw["signature"])
                except (AuditStatementError, ValueError, KeyError, TypeError):
                    continue
                found.append(
                    PrivacyAuditView(
                        row.id,
                        str(row.site),
                        int(row.run_id or 0),
                        parsed,
                        signature,
                        row.created_at,
                    )
                )
        return found
