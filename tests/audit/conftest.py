"""Fixtures of the audit tests: a real ledger on SQLite (audit_ledger.build_ledger)."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_ledger import Ledger, build_ledger


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Ledger:
    """A clean ledger in tmp_path/registry.db, with the sites' keys under tmp_path/sites."""
    return build_ledger(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "sites")
