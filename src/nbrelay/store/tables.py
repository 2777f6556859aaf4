"""The job store's tables as SQLAlchemy sees them, and a job's and a token's row.

Mirrors migrations/versions (tests/store/test_sql.py checks that the two do not drift apart); the schedules' and
notifications' tables join the same `metadata` in their own modules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, Row

from nbrelay.models import Job, JobError, JobState
from nbrelay.store.base import TOKEN_HASH_MAX, TokenRecord

__all__ = ["UtcDateTime", "aware", "job_row", "jobs", "metadata", "to_job", "to_token", "tokens"]


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zone type: SQLAlchemy drops tzinfo on the way in and returns naive values,
    so normalise to UTC before binding and reattach UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return aware(value).astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def aware(ts: datetime) -> datetime:
    # astimezone() would read a naive value as local time and silently shift it.
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: the job store only accepts timezone-aware datetimes")
    return ts


metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("notebook", sa.String, nullable=False),
    sa.Column("kernel_name", sa.String, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("cell_timeout_s", sa.Float, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=True),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column("progress_cell", sa.Integer, nullable=False, server_default="0"),
    sa.Column("progress_total", sa.Integer, nullable=False, server_default="0"),
    # none_as_null: store "no error" as SQL NULL rather than the JSON text 'null'.
    sa.Column("error", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("report_path", sa.String, nullable=True),
    sa.Column("output_path", sa.String, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # Post-run file steps and their results (migrations/versions/*_steps.py).
    sa.Column("steps", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("step_results", sa.JSON(none_as_null=True), nullable=True),
    # Leases (migrations/versions/0005_leases.py).
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("lease_expires_at", UtcDateTime, nullable=True),
    # The schedule that started the job (migrations/versions/0006_schedules.py); no foreign key, it outlives it.
    sa.Column("schedule_id", sa.Integer, nullable=True),
    sa.Index("ix_jobs_state_id", "state", "id"),
    sa.Index("ix_jobs_state_lease", "state", "lease_expires_at"),
    sa.Index("ix_jobs_owner_id", "owner", "id"),
    sa.Index("ix_jobs_owner_state_id", "owner", "state", "id"),  # migrations/versions/0008_jobs_owner_state.py
    sa.Index("ix_jobs_notebook", "notebook"),
    sa.Index("ix_jobs_schedule_id", "schedule_id", "id"),
    sqlite_autoincrement=True,
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("token_hash", sa.String(TOKEN_HASH_MAX), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("last_used_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    sa.Index("ix_tokens_name", "name"),
    sqlite_autoincrement=True,
)


def job_row(job: Job) -> dict[str, Any]:
    return {
        "owner": job.owner,
        "notebook": job.notebook,
        "kernel_name": job.kernel_name,
        "parameters": job.parameters,
        "state": job.state.value,
        "timeout_s": job.timeout_s,
        "cell_timeout_s": job.cell_timeout_s,
        # Checked here too, so callers get a ValueError rather than SQLAlchemy's StatementError around it.
        "created_at": aware(job.created_at),
        "started_at": aware(job.started_at) if job.started_at else None,
        "finished_at": aware(job.finished_at) if job.finished_at else None,
        "progress_cell": job.progress_cell,
        "progress_total": job.progress_total,
        "error": job.error.to_dict() if job.error is not None else None,
        "report_path": job.report_path,
        "output_path": job.output_path,
        "cancel_requested": job.cancel_requested,
        "steps": job.steps,
        "step_results": job.step_results,
        "attempt": job.attempt,
        "worker": job.worker,
        "lease_expires_at": aware(job.lease_expires_at) if job.lease_expires_at else None,
        "schedule_id": job.schedule_id,
    }


def to_job(row: Row[Any]) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        owner=m["owner"],
        notebook=m["notebook"],
        kernel_name=m["kernel_name"],
        parameters=dict(m["parameters"] or {}),
        state=JobState(m["state"]),
        timeout_s=m["timeout_s"],
        cell_timeout_s=m["cell_timeout_s"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        progress_cell=m["progress_cell"],
        progress_total=m["progress_total"],
        error=JobError.from_dict(m["error"]),
        report_path=m["report_path"],
        output_path=m["output_path"],
        cancel_requested=bool(m["cancel_requested"]),
        steps=list(m["steps"] or []),
        step_results=m["step_results"],
        attempt=int(m["attempt"]),
        worker=m["worker"],
        lease_expires_at=m["lease_expires_at"],
        schedule_id=m["schedule_id"],
    )


def to_token(row: Row[Any]) -> TokenRecord:
    m = row._mapping
    return TokenRecord(
        id=m["id"],
        name=m["name"],
        token_hash=m["token_hash"],
        admin=bool(m["admin"]),
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
    )
