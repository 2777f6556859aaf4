"""Report-history queries of SqlJobStore (list_reports, count_reports, clear_report), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from nbrelay.models import Job, JobError, JobState, transition
from nbrelay.store import NewJob
from nbrelay.store.sql import SqlJobStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def finished(
    store: SqlJobStore,
    owner: str,
    notebook: str,
    *,
    report: bool = True,
    state: JobState = JobState.SUCCEEDED,
) -> Job:
    job = await store.add_job(NewJob(owner=owner, notebook=notebook, kernel_name="python3", parameters={"n": 1}))
    running = transition(job, JobState.RUNNING, at=T0)
    assert await store.save(running, expect_state=JobState.QUEUED)
    done = transition(
        running,
        state,
        at=T0.replace(minute=5),
        error=JobError("boom") if state is not JobState.SUCCEEDED else None,
        report_path=f"/data/reports/{job.id}/x.html" if report else None,
        output_path=f"/data/reports/{job.id}/x.ipynb" if report else None,
    )
    assert await store.save(done, expect_state=JobState.RUNNING)
    return done


async def test_list_reports_only_jobs_with_a_report_newest_first(store: SqlJobStore) -> None:
    a1 = await finished(store, "alice", "a.ipynb")
    await finished(store, "alice", "a.ipynb", report=False)
    b1 = await finished(store, "bob", "b.ipynb", state=JobState.FAILED)
    queued = await store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    a2 = await finished(store, "bob", "a.ipynb")

    assert [j.id for j in await store.list_reports()] == [a2.id, b1.id, a1.id]
    assert queued.id not in [j.id for j in await store.list_reports()]
    assert await store.count_reports() == 3
    got = (await store.list_reports())[0]
    assert got == a2  # whole rows come back


async def test_list_reports_filters_and_pages(store: SqlJobStore) -> None:
    a1 = await finished(store, "alice", "a.ipynb")
    a2 = await finished(store, "bob", "a.ipynb")
    b1 = await finished(store, "alice", "b.ipynb")
    a3 = await finished(store, "alice", "a.ipynb")

    assert [j.id for j in await store.list_reports(notebook="a.ipynb")] == [a3.id, a2.id, a1.id]
    assert [j.id for j in await store.list_reports(owner="alice")] == [a3.id, b1.id, a1.id]
    assert [j.id for j in await store.list_reports(notebook="a.ipynb", owner="alice")] == [a3.id, a1.id]
    assert await store.list_reports(notebook="nope.ipynb") == []
    assert [j.id for j in await store.list_reports(limit=2)] == [a3.id, b1.id]
    assert [j.id for j in await store.list_reports(limit=2, offset=2)] == [a2.id, a1.id]
    assert await store.list_reports(limit=2, offset=4) == []

    assert await store.count_reports(notebook="a.ipynb") == 3
    assert await store.count_reports(owner="alice") == 3
    assert await store.count_reports(notebook="a.ipynb", owner="bob") == 1
    assert await store.count_reports(owner="carol") == 0


async def test_clear_report_forgets_both_paths_and_nothing_else(store: SqlJobStore) -> None:
    job = await finished(store, "alice", "a.ipynb", state=JobState.FAILED)
    other = await finished(store, "alice", "a.ipynb")

    cleared = await store.clear_report(job.id)

    assert cleared is not None
    assert cleared.report_path is None and cleared.output_path is None
    assert cleared == dataclasses.replace(job, report_path=None, output_path=None)
    assert await store.get_job(job.id) == cleared
    assert (await store.get_job(other.id)) == other
    assert [j.id for j in await store.list_reports()] == [other.id]
    assert await store.count_reports() == 1
    # Again: nothing to clear, the job comes back as it is.
    assert await store.clear_report(job.id) == cleared


async def test_clear_report_of_missing_job(store: SqlJobStore) -> None:
    assert await store.clear_report(999_999) is None
