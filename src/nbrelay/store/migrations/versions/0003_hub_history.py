"""Formerly: create the hub's history tables (hub_streams, hub_events). Now nothing.

The sql:// hub backend owns those tables and creates them itself when it starts (hub/backends/sql.py), so the
job store's schema no longer includes them. Databases that ran the old version of this migration keep the
tables and their rows (the hub finds them and goes on with the same epochs); new databases get them from the
hub. The revision stays so that the chain 0002 → 0003 → 0004 is unchanged, and neither direction drops anything:
the history belongs to the hub.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
