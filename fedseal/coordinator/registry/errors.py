"""Exceptions the registry raises; callers catch these, never SQLAlchemy's."""

from __future__ import annotations

__all__ = ["RecordConflict", "RecordNotFound", "RegistryError", "RegistryUnavailable"]


class RegistryError(Exception):
    """Base of every registry failure."""


class RegistryUnavailable(RegistryError, ValueError):
    """The database cannot be opened or migrated; the message is one line without secrets."""


class RecordNotFound(RegistryError, LookupError):
    """A run or round id that the registry does not hold."""


class RecordConflict(RegistryError, ValueError):
    """A write that would break the registry's rules (duplicate round, finishing twice...)."""
