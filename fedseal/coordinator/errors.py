"""The coordinator's one exception root."""

from __future__ import annotations

__all__ = ["CoordinatorError"]


class CoordinatorError(Exception):
    """Every error the coordinator's own code raises derives from this."""
