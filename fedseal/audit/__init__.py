"""Auditing the registry's tamper-evident privacy ledger: `fl-audit verify`, `report`, `serve`.

One module per job: `snapshot` reads the registry read-only as plain rows; `entries` lines them
up as chain entries; `chain_check`, `site_check`, `epsilon_check`, `contribution_check` and
`audit_check` (the sites' signed privacy audit statements) are the seven checks of
docs/ledger-format.md, which `verify` runs into a `VerifyResult` of
`findings`; `epsilon_table` lays out every entry's ε by both accountants for `verify`'s output;
`report_data` turns that into the report's data, `render` and `chart` into HTML, JSON or CSV,
`serve` into a read-only web page; `screenshot` drives headless Chromium over a
report; `cli` is `fl-audit`. See docs/audit.md.
"""

from __future__ import annotations

from . import findings
from .findings import *  # noqa: F403 (its __all__: the result types, re-exported as they are)
from .verify import verify, verify_database

__all__ = [*findings.__all__, "verify", "verify_database"]
