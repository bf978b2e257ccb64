"""Which accountant composes a site's DP-SGD steps: one enum, stored in site state and ledger.

Its own module so that reading a site config or a ledger row names an accountant without
importing Opacus (and torch) behind it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Accountant"]


class Accountant(StrEnum):
    """Which Opacus accountant composes the site's steps. The strings are stored: never rename."""

    RDP = "rdp"
    PRV = "prv"
