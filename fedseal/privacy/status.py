"""What a site's privacy-ledger entry for one round says it did: one enum, written by the site
in its signed statement, stored by the registry, read by the auditor."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["PrivacyStatus"]


class PrivacyStatus(StrEnum):
    """A site's privacy-ledger entry for one round: it spent budget, or refused to. The strings
    are stored: never rename one."""

    CHARGED = "charged"  # trained; the round's DP-SGD steps are charged to the site's budget
    DECLINED = "declined"  # did not train: the planned steps would have exceeded its budget
