"""Privacy ledger: each site's DP spend (or refusal) per round.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Written out in full rather than importing the ORM, so this revision keeps
building the same schema whatever ``schema.py`` becomes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _choice(column: str, constraint: str, *values: str) -> tuple[sa.Column, sa.CheckConstraint]:
    """A short string column and the CHECK constraint that pins its values."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return (
        sa.Column(column, sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            f"{column} IN ({allowed})", name=op.f(f"ck_privacy_ledger_{constraint}")
        ),
    )


def _number(name: str) -> sa.Column:
    return sa.Column(name, sa.Double(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "privacy_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("round_number", sa.Integer(), nullable=False),
        *_choice("status", "privacy_status", "charged", "declined"),
        _number("noise_multiplier"),
        _number("sample_rate"),
        sa.Column("steps", sa.Integer(), nullable=False),
        _number("max_grad_norm"),
        _number("delta"),
        *_choice("accountant", "privacy_accountant", "rdp", "prv"),
        _number("epsilon_round"),
        _number("epsilon_cumulative"),
        _number("budget"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_privacy_ledger_site_id_sites")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_privacy_ledger_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_ledger")),
        sa.UniqueConstraint(
            "run_id",
            "round_number",
            "site_id",
            name=op.f("uq_privacy_ledger_run_id_round_number_site_id"),
        ),
    )
    op.create_index(op.f("ix_privacy_ledger_site_id"), "privacy_ledger", ["site_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_privacy_ledger_site_id"), table_name="privacy_ledger")
    op.drop_table("privacy_ledger")
