"""Schedules: notebooks that run on a cron expression, the ticks they fired and the jobs those ticks started.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String, nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("notebook", sa.String, nullable=False),
        sa.Column("kernel_name", sa.String, nullable=True),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("timeout_s", sa.Float, nullable=True),
        sa.Column("cell_timeout_s", sa.Float, nullable=True),
        # Post-run file steps as a job carries them; NULL: the notebook's own metadata.nbrelay.steps at each run.
        sa.Column("steps", sa.JSON, nullable=True),
        sa.Column("overlap", sa.String(16), nullable=False, server_default="skip"),  # skip | queue
        sa.Column("missed", sa.String(16), nullable=False, server_default="run_once"),  # run_once | skip
        # Read by the notification outbox: addresses, and the terminal states worth a message.
        sa.Column("notify_email", sa.JSON, nullable=False, server_default="[]"),
        sa.Column("notify_on", sa.JSON, nullable=False, server_default="[]"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # Ticks before this moment are not owed: set at creation, on resume and when the cron or timezone change.
        sa.Column("ticks_from", sa.DateTime(timezone=True), nullable=False),
        # AUTOINCREMENT: SQLite must never hand a deleted schedule's id to a new one (jobs keep the id).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_schedules_owner_id", "schedules", ["owner", "id"])
    op.create_table(
        "schedule_ticks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tick_at", sa.DateTime(timezone=True), nullable=False),
        # started | skipped (overlap or missed-tick policy) | waiting (overlap=queue, previous run unfinished) |
        # failed (the job could not be submitted: notebook gone, parameters no longer valid)
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer, nullable=True),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("error", sa.String, nullable=True),  # why the tick started no job (refused, skipped, …)
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # The key that makes a tick fire once however many scheduler loops see it: only the insert that wins runs.
        sa.UniqueConstraint("schedule_id", "tick_at", name="uq_schedule_ticks_schedule_tick"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_schedule_ticks_outcome", "schedule_ticks", ["outcome", "schedule_id"])
    # No foreign key: a job outlives its schedule and keeps saying which one started it.
    op.add_column("jobs", sa.Column("schedule_id", sa.Integer, nullable=True))
    op.create_index("ix_jobs_schedule_id", "jobs", ["schedule_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_schedule_id", table_name="jobs")
    op.drop_column("jobs", "schedule_id")
    op.drop_index("ix_schedule_ticks_outcome", table_name="schedule_ticks")
    op.drop_table("schedule_ticks")
    op.drop_index("ix_schedules_owner_id", table_name="schedules")
    op.drop_table("schedules")
