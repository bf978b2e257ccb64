"""Status values stored in the registry; the strings are part of the schema, so never rename one."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ContributionStatus", "RoundStatus", "RunStatus", "SiteStatus"]


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
