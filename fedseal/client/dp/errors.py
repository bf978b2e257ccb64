"""Exceptions of the site's differential-privacy layer, in one place."""

from __future__ import annotations

from fedseal.client.errors import SiteError

__all__ = [
    "AccountantStoreError",
    "CalibrationError",
    "DoubleCharge",
    "DpConfigError",
    "DpError",
]


class DpError(SiteError):
    """Base of every failure raised by `fedseal.client.dp`."""


class DpConfigError(DpError, ValueError):
    """A `[dp]` setting that cannot be used; the message is one line meant for a person."""


class CalibrationError(DpError, ValueError):
    """No noise multiplier reaches the target ε with the site's history; nothing trained."""


class AccountantStoreError(DpError, RuntimeError):
    """The site's accountant file is unreadable or inconsistent; never silently reset."""


class DoubleCharge(DpError, ValueError):
    """A (run, round) already charged with a different mechanism: a round trains at most once."""
