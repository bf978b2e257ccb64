"""Initial registry: sites, runs, rounds and per-site contributions.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written out in full rather than importing the ORM, so this revision keeps
building the same schema whatever ``schema.py`` becomes later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _status(table: str, constraint: str, *values: str) -> tuple[sa.Column, sa.CheckConstraint]:
    """A status column and the CHECK constraint that pins its values."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return (
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.CheckConstraint(f"status IN ({allowed})", name=op.f(f"ck_{table}_{constraint}")),
    )


def _timestamp(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _timestamp("created_at", nullable=False),
        *_status("sites", "site_status", "active", "revoked"),
        sa.Column("public_key", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flower_run_id", sa.String(length=64), nullable=True),
        sa.Column("scenario", sa.String(length=200), nullable=False),
        sa.Column("protocol_mode", sa.String(length=64), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        *_status("runs", "run_status", "running", "completed", "failed", "aborted"),
        sa.Column("rounds_planned", sa.Integer(), nullable=False),
        _timestamp("started_at", nullable=False),
        _timestamp("finished_at", nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_flower_run_id"), "runs", ["flower_run_id"])
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        *_status("rounds", "round_status", "running", "completed", "aborted", "failed"),
        sa.Column("sampled", sa.Integer(), nullable=False),
        sa.Column("participants", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        _timestamp("started_at", nullable=False),
        _timestamp("finished_at", nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.Column("aggregate_digest", sa.String(length=128), nullable=True),
        sa.Column("global_digest", sa.String(length=128), nullable=True),
        sa.Column("loss", sa.Double(), nullable=True),
        sa.Column("accuracy", sa.Double(), nullable=True),
        sa.Column("auc", sa.Double(), nullable=True),
        sa.Column("global_accuracy", sa.Double(), nullable=True),
        sa.Column("global_auc", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_rounds_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("run_id", "number", name=op.f("uq_rounds_run_id_number")),
    )
    op.create_table(
        "contributions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        *_status(
            "contributions",
            "contribution_status",
            "sampled",
            "contributed",
            "dropped",
            "declined",
            "failed",
        ),
        sa.Column("num_examples", sa.Integer(), nullable=True),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("train_seconds", sa.Double(), nullable=True),
        sa.Column("eval_loss", sa.Double(), nullable=True),
        sa.Column("eval_accuracy", sa.Double(), nullable=True),
        sa.Column("eval_auc", sa.Double(), nullable=True),
        sa.Column("eval_examples", sa.Integer(), nullable=True),
        sa.Column("adapter_digest", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["round_id"], ["rounds.id"], name=op.f("fk_contributions_round_id_rounds")
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_contributions_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contributions")),
        sa.UniqueConstraint("round_id", "site_id", name=op.f("uq_contributions_round_id_site_id")),
    )
    op.create_index(op.f("ix_contributions_site_id"), "contributions", ["site_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_contributions_site_id"), table_name="contributions")
    op.drop_table("contributions")
    op.drop_table("rounds")
    op.drop_index(op.f("ix_runs_flower_run_id"), table_name="runs")
    op.drop_table("runs")
    op.drop_table("sites")
