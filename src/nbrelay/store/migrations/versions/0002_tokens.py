"""Create the tokens table: API tokens for auth mode `token`, stored as the caller's hashes.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
        # AUTOINCREMENT: SQLite must never hand a deleted token's id to a new token.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_tokens_name", "tokens", ["name"])


def downgrade() -> None:
    op.drop_index("ix_tokens_name", table_name="tokens")
    op.drop_table("tokens")
