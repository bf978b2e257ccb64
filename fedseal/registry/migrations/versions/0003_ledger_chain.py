"""Tamper-evident ledger: the chain index, signed and chained privacy entries, and events.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Written out in full rather than importing the ORM, so this revision keeps
building the same schema whatever ``schema.py`` becomes later.

Privacy-ledger rows written before this revision are not chain entries and cannot become
any (nobody signed them). Entries written from now on have ``id`` = their chain ``seq``,
counted from 1, so the old rows are moved out of the way to ids <= 0, in the same order;
their hashes and signatures stay null and their ``update_digest`` is "". An audit flags them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HASH = 64


def _choice(
    table: str, column: str, constraint: str, *values: str
) -> tuple[sa.Column, sa.CheckConstraint]:
    """A short string column and the CHECK constraint that pins its values."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return (
        sa.Column(column, sa.String(length=16), nullable=False),
        sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{constraint}")),
    )


def _hash(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=_HASH), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "ledger_chain",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        *_choice("ledger_chain", "table_name", "chain_table", "privacy_ledger", "events"),
        _hash("entry_hash"),
        _hash("prev_hash"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_chain")),
        sa.UniqueConstraint("entry_hash", name=op.f("uq_ledger_chain_entry_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_ledger_chain_prev_hash")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        *_choice(
            "events",
            "action",
            "event_action",
            "chain_started",
            "site_enrolled",
            "site_revoked",
            "run_started",
            "run_finished",
            "budget_changed",
        ),
        sa.Column("site", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _hash("prev_hash"),
        _hash("entry_hash"),
        sa.Column("coordinator_signature", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name=op.f("fk_events_site_sites")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_events_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("entry_hash", name=op.f("uq_events_entry_hash")),
    )
    # legacy rows to ids <= 0, order kept, before any chain entry can want their ids
    op.execute("UPDATE privacy_ledger SET id = id - (SELECT MAX(id) FROM privacy_ledger) - 1")
    with op.batch_alter_table("privacy_ledger") as batch:
        batch.add_column(
            sa.Column("update_digest", sa.String(length=_HASH), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("site_signature", sa.LargeBinary(), nullable=True))
        batch.add_column(_hash("prev_hash", nullable=True))
        batch.add_column(_hash("entry_hash", nullable=True))
        batch.add_column(sa.Column("coordinator_signature", sa.LargeBinary(), nullable=True))
        batch.create_unique_constraint(op.f("uq_privacy_ledger_entry_hash"), ["entry_hash"])
    # the default only filled the legacy rows: every entry states its digest
    with op.batch_alter_table("privacy_ledger") as batch:
        batch.alter_column("update_digest", server_default=None)
    op.add_column("contributions", _hash("update_digest", nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contributions") as batch:
        batch.drop_column("update_digest")
    with op.batch_alter_table("privacy_ledger") as batch:
        batch.drop_constraint(op.f("uq_privacy_ledger_entry_hash"), type_="unique")
        batch.drop_column("coordinator_signature")
        batch.drop_column("entry_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("site_signature")
        batch.drop_column("update_digest")
    if op.get_context().dialect.name == "postgresql":
        # entries were inserted with explicit ids: 0002's serial must continue after them
        op.execute(
            "SELECT setval(pg_get_serial_sequence('privacy_ledger', 'id'), "
            "GREATEST(COALESCE((SELECT MAX(id) FROM privacy_ledger), 0), 0) + 1, false)"
        )
    op.drop_table("events")
    op.drop_table("ledger_chain")
