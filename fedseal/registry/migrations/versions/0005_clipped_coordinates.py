"""Each contribution's count of update coordinates clipped to the plan's bound.

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-20

The encrypted modes encode a site's update in fixed point, clipped to the run plan's bound;
every train reply already carries how many coordinates were clipped, and this column keeps it
beside the contribution, so an operator sees a bound too tight for the training without
reading the sites' logs. Nullable: rows written before this revision, and plain rounds of
older sites, have no count. Written out in full rather than importing the ORM.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contributions") as batch:
        batch.add_column(sa.Column("clipped_coordinates", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contributions") as batch:
        batch.drop_column("clipped_coordinates")
