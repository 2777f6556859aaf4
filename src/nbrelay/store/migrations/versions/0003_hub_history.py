"""Create the hub's durable history: stream positions and recent events, so resumes survive restarts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_streams",
        sa.Column("name", sa.String(160), primary_key=True),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("last_offset", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "hub_events",
        sa.Column("stream", sa.String(160), primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_hub_events_ts", "hub_events", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_hub_events_ts", table_name="hub_events")
    op.drop_table("hub_events")
    op.drop_table("hub_streams")
