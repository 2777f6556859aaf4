"""Jobs that end in the store (so the outbox fills), and schedules that ask for e-mails."""

from __future__ import annotations

from typing import Any

from nbrelay.models import Job, JobError, JobState, transition, utcnow
from nbrelay.store.base import NewJob
from nbrelay.store.schedules import schedules
from nbrelay.store.sql import SqlJobStore


async def add_schedule(store: SqlJobStore, owner: str, emails: list[str], on: list[str]) -> int:
    now = utcnow()
    values: dict[str, Any] = {
        "owner": owner,
        "notebook": "tiny.ipynb",
        "parameters": {},
        "cron": "@daily",
        "timezone": "UTC",
        "notify_email": emails,
        "notify_on": on,
        "created_at": now,
        "updated_at": now,
        "ticks_from": now,
    }
    async with store.engine.begin() as conn:
        return int((await conn.execute(schedules.insert().values(values).returning(schedules.c.id))).scalar_one())


async def end(store: SqlJobStore, state: JobState, *, owner: str = "alice", schedule_id: int | None = None) -> Job:
    job = await store.add_job(
        NewJob(owner=owner, notebook="nb/a.ipynb", kernel_name="python3", schedule_id=schedule_id)
    )
    running = transition(job, JobState.RUNNING, worker="w1")
    assert await store.save(running, expect_state=JobState.QUEUED)
    error = (
        JobError("cell 2 raised ValueError", cell=3, ename="ValueError", evalue="bad")
        if state is JobState.FAILED
        else None
    )
    done = transition(running, state, error=error, report_path="/r/a.html" if state is JobState.SUCCEEDED else None)
    assert await store.save(done, expect_state=JobState.RUNNING, expect_worker="w1")
    return done
