"""Exceptions the registry raises; callers catch these, never SQLAlchemy's."""

from __future__ import annotations

__all__ = [
    "AlreadyFinished",
    "ChainBusy",
    "LedgerKeyMissing",
    "RecordConflict",
    "RecordNotFound",
    "RegistryError",
    "RegistryUnavailable",
    "StatementRefused",
]


class RegistryError(Exception):
    """Base of every registry failure."""


class RegistryUnavailable(RegistryError, ValueError):
    """The database cannot be opened or migrated; the message is one line without secrets.

    ``transient`` is True when the database could not be reached or dropped the connection
    (worth retrying), False for a problem that waiting will not fix (a bad URL, a missing
    directory, a file that is not a database).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RecordNotFound(RegistryError, LookupError):
    """A run or round id that the registry does not hold."""


class RecordConflict(RegistryError, ValueError):
    """A write that would break the registry's rules (duplicate round, finishing twice...)."""


class AlreadyFinished(RecordConflict):
    """Finishing a run or round that is already finished (a retried write may have landed)."""


class LedgerKeyMissing(RegistryError):
    """A write that appends to the ledger chain, on a registry opened without the coordinator's
    ledger key (reading never needs it). The message says how to open it with the key."""

    def __init__(
        self,
        message: str = (
            "this write appends to the ledger chain, which needs the coordinator's ledger "
            "key: open the registry with ledger_key= (fedseal.registry.ledger_key)"
        ),
    ) -> None:
        super().__init__(message)


class StatementRefused(RegistryError, ValueError):
    """A site's privacy statement that the registry will not record: the site is unknown,
    unenrolled or revoked, or its signature does not verify with the site's enrolled key."""


class ChainBusy(RegistryError):
    """Other writers kept taking the ledger chain's next position; nothing was written."""
