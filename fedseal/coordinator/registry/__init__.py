"""Registry of runs, rounds and per-site contributions (SQLite by default, PostgreSQL by URL).

The ServerApp and the CLIs use :class:`Registry` only; open one with
:func:`open_registry`, which also migrates the schema. See docs/registry.md.
"""

from .database import DEFAULT_DATABASE_ENV, open_registry, resolve_database_url, sqlite_url
from .errors import RecordConflict, RecordNotFound, RegistryError, RegistryUnavailable
from .migrate import upgrade_to_head
from .registry import Clock, Registry, utc_now
from .statuses import (
    ContributionStatus,
    PrivacyAccountant,
    PrivacyStatus,
    RoundStatus,
    RunStatus,
    SiteStatus,
)
from .views import ContributionView, PrivacyEntryView, RoundView, RunView

__all__ = [
    "DEFAULT_DATABASE_ENV",
    "Clock",
    "ContributionStatus",
    "ContributionView",
    "PrivacyAccountant",
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
    "open_registry",
    "resolve_database_url",
    "sqlite_url",
    "upgrade_to_head",
    "utc_now",
]
