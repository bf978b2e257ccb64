"""The auditor's one exception root."""

from __future__ import annotations

__all__ = ["AuditError"]


class AuditError(Exception):
    """Every error the auditor's own code raises derives from this."""
