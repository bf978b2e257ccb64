"""Status values stored in the registry; the strings are part of the schema, so never rename one.

A privacy entry's status and accountant are `fedseal.privacy`'s own enums (the sites write
them, the auditor reads them), named here so that the registry's columns list every enum."""

from __future__ import annotations

from enum import StrEnum

from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.status import PrivacyStatus

__all__ = [
    "Accountant",
    "ChainTable",
    "ContributionStatus",
    "EventAction",
    "PrivacyStatus",
    "RoundStatus",
    "RunStatus",
    "SiteStatus",
]


class SiteStatus(StrEnum):
    """Whether a site may still take part in federations."""

    ACTIVE = "active"
    REVOKED = "revoked"


class RunStatus(StrEnum):
    """Life of one federated run; only ``RUNNING`` is not final."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"


class RoundStatus(StrEnum):
    """Outcome of one round; the registry, not Flower, says whether a round completed."""

    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


class ContributionStatus(StrEnum):
    """What one sampled site did in one round."""

    SAMPLED = "sampled"  # asked to train, no answer yet
    CONTRIBUTED = "contributed"  # its update went into the aggregate
    DROPPED = "dropped"  # no usable answer (timeout, lost connection, or no answer by round end)
    DECLINED = "declined"  # answered, but chose not to train (e.g. privacy budget spent)
    FAILED = "failed"  # answered with an error


class ChainTable(StrEnum):
    """The tables whose rows are entries of the ledger chain (``ledger_chain.table_name``)."""

    PRIVACY_LEDGER = "privacy_ledger"
    EVENTS = "events"


class EventAction(StrEnum):
    """What an ``events`` row records; docs/ledger-format.md gives each one's details."""

    CHAIN_STARTED = "chain_started"  # the first entry of every chain: the coordinator's key
    SITE_ENROLLED = "site_enrolled"  # a site's keys, first enrolment or re-key
    SITE_REVOKED = "site_revoked"
    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"
    BUDGET_CHANGED = "budget_changed"
    PRIVACY_AUDIT = "privacy_audit"  # a site's signed privacy audit statement of a run
