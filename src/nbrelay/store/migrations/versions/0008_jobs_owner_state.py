"""An index on a job's owner and state: the unfinished jobs of one owner (every push connection's snapshot) are
found by seeking them, not by walking everything the owner ever ran.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_owner_state_id", "jobs", ["owner", "state", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_state_id", table_name="jobs")
