"""The site's one exception root, and the refusal a site sends back instead of doing a task."""

from __future__ import annotations

__all__ = ["SiteError", "SiteRefusal"]


class SiteError(Exception):
    """Every error the site's own code raises derives from this."""


class SiteRefusal(SiteError, RuntimeError):
    """The site will not do what the message asks; the reason goes back to the coordinator."""
