"""Writing sites: register, enrol (with the site's public keys), revoke, set a budget.

Enrolments, revocations and budget changes are appended to the ledger chain as events, so an
auditor can tell which keys a site held and when.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys

from .chain import ChainAppender
from .checks import check_budget, check_name, check_text
from .core import RegistryCore
from .errors import RecordConflict, RecordNotFound
from .schema import Event, Site
from .statuses import EventAction, SiteStatus

__all__ = ["SitesMixin"]


class SitesMixin(RegistryCore):
    """The registry's site writes, and the enrolled keys the coordinator hands out."""

    def ensure_site(self, name: str) -> int:
        """The id of the site called ``name``, registering it as active if it is new."""
        name = check_name(name, "site name")
        try:
            with self._write() as session:
                return self._site_ids(session, [name])[name]
        except RecordConflict:
            # another process registered the same name between our read and our insert
            with self._read() as session:
                site_id = session.scalar(select(Site.id).where(Site.name == name))
            if site_id is None:
                raise
            return site_id

    def enroll_site(self, name: str, public_key: bytes) -> int:
        """Register (or re-key) a site with its public key bundle; returns its id.

        Appends a ``site_enrolled`` event, unless the site is already enrolled with exactly
        these keys. A revoked site stays revoked: re-enrolling it is refused.
        """
        name = check_name(name, "site name")
        if not isinstance(public_key, bytes) or not public_key:
            raise TypeError("public_key must be non-empty bytes")
        try:
            keys = SitePublicKeys.from_bundle(name, public_key)
        except SiteKeyError:
            raise ValueError(
                f"public_key of site {name} is not a site key bundle (fl-client enroll makes one)"
            ) from None
        details = {"identity_key": keys.identity.hex(), "sealing_key": keys.sealing.hex()}
        self._require_ledger_key()  # before the site is registered
        site_id = self.ensure_site(name)

        def enroll(session: Session, chain: ChainAppender) -> int:
            site = session.get(Site, site_id)
            assert site is not None
            if site.status is SiteStatus.REVOKED:
                raise RecordConflict(f"site {name} is revoked and cannot be re-enrolled")
            if site.public_key == public_key and _enrolled_keys(session, name) == details:
                return site_id
            site.public_key = public_key
            chain.event(EventAction.SITE_ENROLLED, site=name, details=details)
            return site_id

        return self._chained(enroll)

    def revoke_site(self, name: str, reason: str) -> None:
        """Revoke a site for good: it is no longer sampled, its key no longer listed, and its
        statements are refused. Appends a ``site_revoked`` event."""
        name = check_name(name, "site name")
        reason = check_text(reason, "reason")
        if not reason.strip():
            raise ValueError("reason must say why the site is revoked")

        def revoke(session: Session, chain: ChainAppender) -> None:
            site = session.scalar(select(Site).where(Site.name == name))
            if site is None:
                raise RecordNotFound(f"no site called {name}")
            if site.status is SiteStatus.REVOKED:
                raise RecordConflict(f"site {name} is already revoked")
            site.status = SiteStatus.REVOKED
            chain.event(EventAction.SITE_REVOKED, site=name, details={"reason": reason})

        self._chained(revoke)

    def record_budget_change(self, site: str, budget: float) -> None:
        """Record that the operator set the site's total ε budget (a ``budget_changed`` event),
        registering the site if it is new."""
        name = check_name(site, "site")
        value = check_budget(budget, "budget")
        self._require_ledger_key()  # before the site is registered
        self.ensure_site(name)
        self._chained(
            lambda _session, chain: chain.event(
                EventAction.BUDGET_CHANGED, site=name, details={"budget": value}
            )
        )

    def site_public_keys(self) -> dict[str, bytes]:
        """Enrolled public key bundles of the active sites, by site name."""
        with self._read() as session:
            rows = session.execute(
                select(Site.name, Site.public_key).where(
                    Site.status == SiteStatus.ACTIVE, Site.public_key.is_not(None)
                )
            ).all()
        return {name: bytes(key) for name, key in rows}


def _enrolled_keys(session: Session, name: str) -> dict[str, str] | None:
    """The keys of the site's latest ``site_enrolled`` event, unless a revocation followed it."""
    latest = session.execute(
        select(Event.action, Event.details)
        .where(
            Event.site == name,
            Event.action.in_([EventAction.SITE_ENROLLED, EventAction.SITE_REVOKED]),
        )
        .order_by(Event.id.desc())
        .limit(1)
    ).one_or_none()
    if latest is None or latest.action is not EventAction.SITE_ENROLLED:
        return None
    return json.loads(latest.details)
