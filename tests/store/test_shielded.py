"""Store calls whose callers are cancelled (a client gone mid-request) run to their end: no connection is
invalidated, nothing is left pending for the garbage collector, and a write the caller asked for is made."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from pathlib import Path

import anyio
import pytest

from nbrelay.store import open_store
from nbrelay.store.base import NewJob
from tests.store.locks import held_by_another_thread


async def test_reads_cancelled_as_starlette_cancels_leave_nothing_pending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """anyio cancels again at every await while a scope is cancelled, as Starlette does when a streaming client
    goes away. Before store calls were shielded, about half of these left "Task was destroyed but it is
    pending!" (SQLAlchemy's close of the invalidated connection, itself cancelled)."""
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.start()
    try:
        for i in range(40):
            async with anyio.create_task_group() as group:
                group.start_soon(store.list_jobs)
                await anyio.sleep(0.0001 * (i % 10))  # cancelled at different moments of the call
                group.cancel_scope.cancel()
        await asyncio.sleep(0.2)
        gc.collect()
        assert await store.list_jobs() == []  # the store still answers
    finally:
        await store.close()
    gc.collect()
    assert not [r for r in caplog.records if "Task was destroyed" in r.getMessage()]


async def test_a_write_whose_caller_is_cancelled_is_made(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.start()
    try:
        call = asyncio.create_task(store.add_job(NewJob(owner="ada", notebook="a.ipynb", kernel_name="python3")))
        await asyncio.sleep(0)  # the call has started
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(100):
            if await store.list_jobs():
                break
            await asyncio.sleep(0.02)
        assert [job.notebook for job in await store.list_jobs()] == ["a.ipynb"]
    finally:
        await store.close()


def test_a_store_closing_lets_a_cancelled_callers_write_finish_before_the_loop_ends(tmp_path: Path) -> None:
    """A shutdown: the caller (a loop being stopped) is cancelled while its write waits for SQLite's lock, the store
    closes, the event loop ends. The write is made: close() waits for it, where the end of the loop would otherwise
    cancel it mid-way (a connection invalidated, the row never committed)."""
    path = tmp_path / "jobs.db"

    async def shutdown() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.start()
        with held_by_another_thread(str(path)):
            call = asyncio.create_task(store.add_job(NewJob(owner="ada", notebook="a.ipynb", kernel_name="python3")))
            await asyncio.sleep(0.05)  # waiting for the lock on the async path
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            closing = asyncio.create_task(store.close())
            await asyncio.sleep(0.3)  # the lock goes while the store is closing
        await closing

    asyncio.run(shutdown())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT notebook FROM jobs").fetchall() == [("a.ipynb",)]
