"""Privacy audit statements on the chain: the ``privacy_audit`` event action.

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-15

A site's signed privacy audit statement (``fedseal.contract.audit_statement``) is appended to
the ledger chain as an ``events`` entry; this revision only widens the CHECK constraint on
``events.action`` to allow the new word. Written out in full rather than importing the ORM.
Downgrading refuses while such an entry exists: chain entries are never deleted.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = (
    "chain_started",
    "site_enrolled",
    "site_revoked",
    "run_started",
    "run_finished",
    "budget_changed",
)
_NEW = "privacy_audit"
_NAME = "ck_events_event_action"


def _allow(*values: str) -> None:
    allowed = ", ".join(f"'{value}'" for value in values)
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(op.f(_NAME), type_="check")
        batch.create_check_constraint(op.f(_NAME), sa.text(f"action IN ({allowed})"))


def upgrade() -> None:
    _allow(*_BEFORE, _NEW)


def downgrade() -> None:
    held = op.get_bind().execute(
        sa.text("SELECT COUNT(*) FROM events WHERE action = :action"), {"action": _NEW}
    )
    if held.scalar_one():
        raise RuntimeError(
            "the chain holds privacy_audit entries; revision 0003 cannot hold them and chain "
            "entries are never deleted"
        )
    _allow(*_BEFORE)
