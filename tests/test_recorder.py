"""The recorder's fence on leases: a run's events go out only while its job is still this process's."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nbrelay.config import Settings
from nbrelay.models import Event, JobState
from nbrelay.recorder import JobRecorder
from nbrelay.store.base import NewJob
from nbrelay.store.sql import SqlJobStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlJobStore]:
    store = SqlJobStore(Settings(workspace=tmp_path, data_dir=tmp_path / "data").database_url)
    await store.start()
    yield store
    await store.close()


def _recorder(store: SqlJobStore, tmp_path: Path, *, leased: bool) -> tuple[JobRecorder, list[Event]]:
    recorder = JobRecorder(Settings(workspace=tmp_path, data_dir=tmp_path / "data"), store, "w1", leased=leased)
    published: list[Event] = []

    async def listen(event: Event) -> None:
        published.append(event)

    recorder.listeners.append(listen)
    return recorder, published


@pytest.mark.parametrize("leased", [True, False])
async def test_a_run_of_a_job_taken_over_sends_nothing_more_on_leases(
    store: SqlJobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leased: bool
) -> None:
    """Found from outside: a worker frozen past its lease published its run's events on waking, beside the next
    attempt's (progress 6, then 5…11, then 7…11) and after the job's end."""
    monkeypatch.setattr("nbrelay.recorder._OWNERSHIP_CHECK_S", 0.0)  # read again for every event
    recorder, published = _recorder(store, tmp_path, leased=leased)
    job = await store.add_job(NewJob(owner="alice", notebook="n.ipynb", kernel_name="python3"))
    assert await store.claim("w1", lease_s=60) is not None
    await recorder.on_event(Event("job.output", {"job": job.id, "text": "mine", "name": "stdout"}))
    assert [e.data["text"] for e in published] == ["mine"]
    running = await store.get_job(job.id)
    assert running is not None and await recorder.requeue(running, "worker lost") is not None
    assert await store.claim("w2", lease_s=60) is not None  # the next attempt, on another worker
    published.clear()
    await recorder.on_event(Event("job.output", {"job": job.id, "text": "stale", "name": "stdout"}))
    await recorder.on_event(Event("job.progress", {"job": job.id, "cell": 9, "total": 11}))
    after = await store.get_job(job.id)
    assert after is not None
    if leased:
        assert published == [] and after.progress_cell == 0  # nothing out, the other attempt's progress kept
    else:  # one server runs its jobs: nobody else can have them, and nothing is read again
        assert [e.type for e in published] == ["job.output", "job.progress"]


async def test_a_job_disowned_by_its_host_sends_nothing_more(store: SqlJobStore, tmp_path: Path) -> None:
    recorder, published = _recorder(store, tmp_path, leased=True)
    job = await store.add_job(NewJob(owner="alice", notebook="n.ipynb", kernel_name="python3"))
    assert await store.claim("w1", lease_s=60) is not None
    recorder.disown(job.id)  # its lease was found lost on renewal
    await recorder.on_event(Event("job.output", {"job": job.id, "text": "x", "name": "stdout"}))
    assert published == []


async def test_the_end_of_a_run_is_recorded_once_the_store_takes_it_again(
    store: SqlJobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Found from outside: a SQLite write lock held (or a full disk, or PostgreSQL away) as a run ended left the
    job running for good; its end is tried again until the store takes it."""
    monkeypatch.setattr("nbrelay.recorder._RETRY_FIRST_S", 0.01)
    recorder, published = _recorder(store, tmp_path, leased=False)
    job = await store.add_job(NewJob(owner="alice", notebook="n.ipynb", kernel_name="python3"))
    assert await store.claim("w1", lease_s=60) is not None
    real_save, real_get = store.save, store.get_job
    refusals = {"get": 2, "save": 3}

    async def refusing(kind: str, call: Any, *args: Any, **kw: Any) -> Any:
        if refusals[kind]:
            refusals[kind] -= 1
            raise sqlite3.OperationalError("database is locked")
        return await call(*args, **kw)

    monkeypatch.setattr(store, "get_job", lambda *a, **kw: refusing("get", real_get, *a, **kw))
    monkeypatch.setattr(store, "save", lambda *a, **kw: refusing("save", real_save, *a, **kw))
    await recorder.on_event(Event("job.succeeded", {"job": job.id, "report": False}))
    ended = await real_get(job.id)
    assert ended is not None and ended.state is JobState.SUCCEEDED
    assert refusals == {"get": 0, "save": 0}
    assert [e.type for e in published] == ["job.succeeded"]
    assert caplog.text.count(f"could not record the end of job {job.id} (database is locked)") == 3


async def test_a_bug_in_recording_the_end_is_raised_not_tried_for_ever(
    store: SqlJobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _published = _recorder(store, tmp_path, leased=False)
    job = await store.add_job(NewJob(owner="alice", notebook="n.ipynb", kernel_name="python3"))
    assert await store.claim("w1", lease_s=60) is not None

    async def broken(*_args: Any, **_kw: Any) -> bool:
        raise TypeError("a bug")

    monkeypatch.setattr(store, "save", broken)
    with pytest.raises(TypeError, match="a bug"):
        await asyncio.wait_for(recorder.on_event(Event("job.succeeded", {"job": job.id, "report": False})), 10)
