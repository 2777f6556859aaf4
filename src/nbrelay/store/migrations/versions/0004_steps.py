"""Post-run file steps: the steps a job carries and, once they ran, their results.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, no copy of the table: SQLite adds a NOT NULL column with a constant default in place (existing
# jobs get []) and drops columns since 3.35.
def upgrade() -> None:
    op.add_column("jobs", sa.Column("steps", sa.JSON, nullable=False, server_default="[]"))
    op.add_column("jobs", sa.Column("step_results", sa.JSON, nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "step_results")
    op.drop_column("jobs", "steps")
