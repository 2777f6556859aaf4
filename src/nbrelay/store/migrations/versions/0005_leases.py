"""Leases: which worker runs a job and until when its lease holds, and the job's attempt number.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("attempt", sa.Integer, nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("worker", sa.String(200), nullable=True))
    op.add_column("jobs", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
    # The reaper's query: running jobs whose lease ran out.
    op.create_index("ix_jobs_state_lease", "jobs", ["state", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_lease", table_name="jobs")
    op.drop_column("jobs", "lease_expires_at")
    op.drop_column("jobs", "worker")
    op.drop_column("jobs", "attempt")
