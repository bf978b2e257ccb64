"""Registry of runs, rounds and per-site contributions (SQLite by default, PostgreSQL by URL).

The ServerApp and the CLIs use :class:`Registry` only; open one with
:func:`open_registry`, which also migrates the schema. See docs/registry.md; the ledger chain's
format, which auditors recompute with :func:`entry_content`, is docs/ledger-format.md.
"""

from .audits import AuditRecorded, PrivacyAuditView
from .chain import entry_content, entry_rows
from .database import DEFAULT_DATABASE_ENV, open_registry, resolve_database_url, sqlite_url
from .errors import (
    ChainBusy,
    LedgerKeyMissing,
    RecordConflict,
    RecordNotFound,
    RegistryError,
    RegistryUnavailable,
    StatementRefused,
)
from .migrate import upgrade_to_head
from .registry import Clock, Registry, utc_now
from .statuses import (
    Accountant,
    ChainTable,
    ContributionStatus,
    EventAction,
    PrivacyStatus,
    RoundStatus,
    RunStatus,
    SiteStatus,
)
from .views import ContributionView, EventView, PrivacyEntryView, RoundView, RunView

__all__ = [
    "DEFAULT_DATABASE_ENV",
    "Accountant",
    "AuditRecorded",
    "ChainBusy",
    "ChainTable",
    "Clock",
    "ContributionStatus",
    "ContributionView",
    "EventAction",
    "EventView",
    "LedgerKeyMissing",
    "PrivacyAuditView",
    "PrivacyEntryView",
    "PrivacyStatus",
    "RecordConflict",
    "RecordNotFound",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "RoundStatus",
    "RoundView",
    "RunStatus",
    "RunView",
    "SiteStatus",
    "StatementRefused",
    "entry_content",
    "entry_rows",
    "open_registry",
    "resolve_database_url",
    "sqlite_url",
    "upgrade_to_head",
    "utc_now",
]
