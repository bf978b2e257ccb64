"""Check 5: every update that went into an aggregate was paid for in the ledger.

`contributions` is not chained; it is the coordinator's working record of who contributed. That
makes it an independent witness: a `contributed` row without a `charged` entry for the same run,
round and site means an update went into the model with no privacy spend recorded (an entry was
removed, say by truncating the chain's newest entries, or the site trained without DP), and an
update digest that differs from the one the site signed means the ledger entry is about another
update.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedseal.privacy.status import PrivacyStatus
from fedseal.registry.statuses import ContributionStatus

from .entries import PRIVACY, name
from .findings import Check, Finding
from .snapshot import PrivacyRow, Snapshot

__all__ = ["check_contributions"]


def check_contributions(snapshot: Snapshot, ledger: Sequence[PrivacyRow]) -> list[Finding]:
    """Findings of check 5 over every `contributed` row; `ledger` is the entries that count."""
    by_key: dict[tuple[object, object, object], PrivacyRow] = {}
    for row in ledger:
        by_key.setdefault((row.run_id, row.round_number, row.site_id), row)
    findings = []
    for contribution in snapshot.contributions:
        if contribution.status != ContributionStatus.CONTRIBUTED:
            continue
        here = name("contributions", contribution.id)
        where = (
            f"run {contribution.run_id} round {contribution.round_number} "
            f"site {contribution.site or contribution.site_id}"
        )
        entry = by_key.get((contribution.run_id, contribution.round_number, contribution.site_id))
        if entry is None or entry.status != PrivacyStatus.CHARGED:
            findings.append(
                Finding(
                    Check.CONTRIBUTIONS,
                    here,
                    "status",
                    f"a charged privacy_ledger entry for {where}",
                    "none" if entry is None else f"{name(PRIVACY, entry.id)}, {entry.status!r}",
                )
            )
            continue
        if contribution.update_digest and contribution.update_digest != entry.update_digest:
            findings.append(
                Finding(
                    Check.CONTRIBUTIONS,
                    here,
                    "update_digest",
                    f"{entry.update_digest!r} as signed in {name(PRIVACY, entry.id)}",
                    repr(contribution.update_digest),
                )
            )
    return findings
