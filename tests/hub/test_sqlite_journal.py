"""The sql:// hub's journal on SQLite (hub/backends/sqlite_journal.py): one process hands out offsets at a time, and
what a process delivered survives its death, by real faults: a process killed with SIGKILL before its group reached
the database, a record cut short, a journal file that cannot grow (the disk is full)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nbrelay.errors import HubUnavailable
from nbrelay.hub import Hub, open_hub
from nbrelay.hub.backends.sql import SqlBackend
from nbrelay.hub.backends.sqlite_journal import Journal, decode, encode
from nbrelay.models import Event

# A process of its own publishes with a window so long that nothing reaches the database, then acts as told.
_PUBLISHER = textwrap.dedent(
    """
    import asyncio, json, os, resource, signal, sys
    from nbrelay.errors import HubUnavailable
    from nbrelay.hub import open_hub
    from nbrelay.models import Event

    async def main(database, then):
        hub = open_hub("sql://", database_url=database, history_size=500, history_ttl_s=3600, subscriber_queue_size=9)
        hub.backend.sqlite.commit_window_s = 3600
        await hub.start()
        out = {"ids": [], "errors": []}
        for n in range(20):
            if then == "disk-full" and n == 10:  # the journal cannot grow from here on
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                journal = hub.backend.sqlite.journal
                resource.setrlimit(resource.RLIMIT_FSIZE, (sum(journal.sizes) + 1, resource.RLIM_INFINITY))
            if then == "disk-full" and n == 12:
                resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            try:
                owner, job = await hub.publish(Event("notice", {"n": n}), ["user:a", "job:1"])
                out["ids"].append([owner.id, job.id])
            except HubUnavailable as exc:
                out["errors"].append([n, str(exc)])
        print(json.dumps(out), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def publish_then_die(database: str, then: str = "kill") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PUBLISHER, database, then], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -9, done.stderr
    return json.loads(done.stdout)


def rows(path: Path, stream: str) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as db:
        query = 'SELECT "offset", data FROM hub_events WHERE stream = ? ORDER BY 1'
        return [(offset, json.loads(data)["n"]) for offset, data in db.execute(query, (stream,))]


def event_n(n: int) -> Event:
    return Event("notice", {"n": n})


async def opened(database: str) -> Hub:
    hub = open_hub("sql://", database_url=database, history_size=500, history_ttl_s=3600, subscriber_queue_size=100)
    await hub.start()
    return hub


async def test_what_a_killed_process_delivered_is_written_by_the_next_and_resumed_exactly(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    database = f"sqlite:///{path}"
    out = publish_then_die(database)
    assert len(out["ids"]) == 20 and not out["errors"]
    assert rows(path, "user:a") == []  # killed before any group reached the database
    assert Path(f"{path}-hub.journal0").stat().st_size > 0
    hub = await opened(database)
    try:
        for stream, column in (("user:a", 0), ("job:1", 1)):
            epoch = out["ids"][0][column].split(":")[0]
            resume = await hub.resume(stream, f"{epoch}:0")
            assert resume.recovered and resume.epoch == epoch
            assert [e.id for e in resume.events] == [ids[column] for ids in out["ids"]]
            assert [e.data["n"] for e in resume.events] == list(range(20))
        # A client that saw the last one resumes with nothing missed; the next event follows it.
        assert (await hub.resume("user:a", out["ids"][-1][0])).recovered
        (following,) = await hub.publish(event_n(20), ["user:a"])
        assert following.id == out["ids"][0][0].replace(":1", ":21")
    finally:
        await hub.close()
    assert [Path(f"{path}-hub.journal{i}").stat().st_size for i in (0, 1)] == [0, 0]


async def test_a_record_cut_short_by_a_crash_is_not_one(tmp_path: Path) -> None:
    """The last line has no newline (the process died in its write): the whole records before it are written,
    the torn one is not, and the stream goes on after the last whole one."""
    path = tmp_path / "hub.db"
    database = f"sqlite:///{path}"
    hub = await opened(database)
    assert isinstance(hub.backend, SqlBackend)
    epoch = hub.backend.epoch_for("user:a")
    await hub.close()
    whole = b"".join(
        encode("2026-12-05 05:00:00.000000", "notice", [("user:a", n, epoch)], json.dumps({"n": n})) for n in (1, 2)
    )
    torn = encode("2026-12-05 05:00:00.000000", "notice", [("user:a", 3, epoch)], '{"n": 3}')[:-9]
    Path(f"{path}-hub.journal1").write_bytes(whole + torn)
    Path(f"{path}-hub.lock").write_bytes(b"a process that died")
    hub = await opened(database)
    try:
        assert rows(path, "user:a") == [(1, 1), (2, 2)]
        (event,) = await hub.publish(event_n(4), ["user:a"])
        assert event.id == f"{epoch}:3"
    finally:
        await hub.close()


async def test_a_journal_that_cannot_grow_fails_the_publish_and_uses_up_no_offset(tmp_path: Path) -> None:
    """RLIMIT_FSIZE stands in for a full disk: the publishes made while the journal cannot grow fail with
    HubUnavailable and deliver nothing; the next ones take the offsets they would have had."""
    path = tmp_path / "hub.db"
    database = f"sqlite:///{path}"
    out = publish_then_die(database, "disk-full")
    assert [n for n, _ in out["errors"]] == [10, 11]
    assert all("could not publish" in error for _, error in out["errors"])
    hub = await opened(database)
    try:
        assert [n for _, n in rows(path, "user:a")] == [*range(10), *range(12, 20)]
        assert [offset for offset, _ in rows(path, "user:a")] == list(range(1, 19))
    finally:
        await hub.close()


async def test_a_hub_whose_lock_another_process_keeps_says_so(tmp_path: Path) -> None:
    """Another process holds the lock and never lets go (here: a journal of the test's own): the hub waits
    lock_wait_s, then refuses to start with a message that names the lock file and the likely cause."""
    path = tmp_path / "hub.db"
    other = Journal(path)
    other.open()
    assert other.try_lock() is not None
    database = f"sqlite:///{path}"
    hub = open_hub("sql://", database_url=database, history_size=5, history_ttl_s=60, subscriber_queue_size=9)
    assert isinstance(hub.backend, SqlBackend) and hub.backend.sqlite is not None
    hub.backend.sqlite.lock_wait_s = 0.3
    try:
        with pytest.raises(HubUnavailable, match=r"hub\.lock") as refused:
            await hub.start()
        assert "second server" in (refused.value.hint or "")
    finally:
        other.close()
        await hub.close()


def test_one_journal_holds_the_lock_at_a_time_and_learns_who_held_it_since(tmp_path: Path) -> None:
    first, second = Journal(tmp_path / "hub.db"), Journal(tmp_path / "hub.db")
    first.open()
    second.open()
    try:
        taken = first.try_lock()
        assert taken is not None and taken.others_wrote and not taken.leftovers
        assert second.try_lock() is None
        first.unlock()
        again = first.try_lock()
        assert again is not None and not again.others_wrote  # nobody else held it in between
        first.append(encode("t", "notice", [("user:a", 1, "e")], "{}"))
        first.unlock()  # as a process that died would: its record is left
        taken = second.try_lock()
        assert taken is not None and taken.others_wrote and taken.leftovers
        assert [r.placements for r in second.leftovers()] == [[("user:a", 1, "e")]]
    finally:
        first.close()
        second.close()


def test_a_record_reads_back_as_written_whatever_its_strings_hold() -> None:
    odd = 'a "quoted"\ttab, a\nnewline, a \\ and ünïcode ✓'
    data = json.dumps({"text": odd})
    line = encode("2026-12-05 05:00:00.000001", odd, [(odd, 7, "ab12"), ("job:1", 2**62, odd)], data)
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and line.count(b"\t") == 1
    record = decode(line[:-1])
    assert (record.ts, record.type, record.data_json) == ("2026-12-05 05:00:00.000001", odd, data)
    assert record.placements == [(odd, 7, "ab12"), ("job:1", 2**62, odd)]


def test_the_files_are_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "hub.db")
    journal.open()
    journal.close()
    for path in (journal.lock_path, *journal.segment_paths):
        assert os.stat(path).st_mode & 0o777 == 0o600
