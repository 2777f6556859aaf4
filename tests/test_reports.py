"""ReportHistory on a real SQLite store and report files on disk: listing, deleting, path safety, and retention
deleting exactly what the policy says."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nbrelay.errors import Conflict, NotFound
from nbrelay.jobs import User
from nbrelay.models import Job, JobError, JobState, transition
from nbrelay.reports import ReportHistory
from nbrelay.store import NewJob
from nbrelay.store.sql import SqlJobStore

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALICE, BOB, ROOT = User("alice"), User("bob"), User("root", admin=True)
HTML = b"<html><body>report</body></html>"
IPYNB = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'

# Days before NOW at which job i of each notebook finished (oldest job first, ids ascending).
AGES = {
    "a.ipynb": [5.5, 4.5, 3.5, 2.5, 1.5, 0.5],  # spread across the keep_days=3 line
    "sub/b.ipynb": [9.5, 8.5, 7.5, 6.5, 5.5, 4.5],  # all old
    "c.ipynb": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # all recent
}
TERMINAL = [JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlJobStore]:
    s = SqlJobStore(f"sqlite:///{tmp_path / 'db' / 'jobs.db'}")
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def reports_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "reports"
    folder.mkdir(parents=True)
    return folder


def history(store: SqlJobStore, reports_dir: Path, **policy: float | None) -> ReportHistory:
    return ReportHistory(store=store, reports_dir=reports_dir, **policy)


async def add_finished(
    store: SqlJobStore,
    reports_dir: Path | None,
    *,
    owner: str = "alice",
    notebook: str = "a.ipynb",
    finished_at: datetime = NOW,
    state: JobState = JobState.SUCCEEDED,
    report: bool = True,
    paths: tuple[Path, Path] | None = None,
) -> Job:
    """A job that ran and finished at `finished_at`; with `report`, its report files are written under
    reports_dir/<id>/ (or `paths` are recorded as they are, without writing anything)."""
    job = await store.add_job(NewJob(owner=owner, notebook=notebook, kernel_name="python3", parameters={"n": 3}))
    running = transition(job, JobState.RUNNING, at=finished_at - timedelta(seconds=90))
    assert await store.save(running, expect_state=JobState.QUEUED)
    report_path = output_path = None
    if report:
        if paths is None:
            assert reports_dir is not None
            stem = notebook.rsplit("/", 1)[-1].removesuffix(".ipynb")
            folder = reports_dir / str(job.id)
            folder.mkdir(parents=True)
            paths = (folder / f"{stem}.html", folder / f"{stem}.ipynb")
            paths[0].write_bytes(HTML)
            paths[1].write_bytes(IPYNB)
        report_path, output_path = str(paths[0]), str(paths[1])
    done = transition(
        running,
        state,
        at=finished_at,
        error=None if state is JobState.SUCCEEDED else JobError(state.value),
        report_path=report_path,
        output_path=output_path,
    )
    assert await store.save(done, expect_state=JobState.RUNNING)
    return done


async def add_running(store: SqlJobStore, reports_dir: Path, notebook: str = "a.ipynb", *, owner: str = "alice") -> Job:
    job = await store.add_job(NewJob(owner=owner, notebook=notebook, kernel_name="python3"))
    running = transition(job, JobState.RUNNING, at=NOW - timedelta(days=30))
    assert await store.save(running, expect_state=JobState.QUEUED)
    return running


@dataclass
class World:
    """3 notebooks x 6 finished jobs with reports (ids interleaved across notebooks, owners alternating),
    a running job, and a finished job without a report."""

    reports: dict[str, list[Job]] = field(default_factory=dict)  # per notebook, oldest first
    running: Job | None = None
    running_files: list[Path] = field(default_factory=list)
    no_report: Job | None = None
    orphan: Path | None = None

    def pick(self, wanted: dict[str, list[int]]) -> set[int]:
        return {self.reports[nb][i].id for nb, indexes in wanted.items() for i in indexes}

    @property
    def all_reports(self) -> list[Job]:
        return [job for jobs in self.reports.values() for job in jobs]


@pytest.fixture
async def world(store: SqlJobStore, reports_dir: Path) -> World:
    w = World(reports={nb: [] for nb in AGES})
    for i in range(6):
        for k, (notebook, ages) in enumerate(AGES.items()):
            job = await add_finished(
                store,
                reports_dir,
                owner="alice" if (i + k) % 2 == 0 else "bob",
                notebook=notebook,
                finished_at=NOW - timedelta(days=ages[i]),
                state=TERMINAL[(i + k) % len(TERMINAL)],
            )
            w.reports[notebook].append(job)
    # A running job of a.ipynb, newer than all, with files already in its folder and even a recorded report path
    # (the service never records one before the end, but if it did, retention must still leave the job alone).
    running = await add_running(store, reports_dir)
    folder = reports_dir / str(running.id)
    folder.mkdir()
    w.running_files = [folder / "a.html", folder / "a.ipynb"]
    for path in w.running_files:
        path.write_bytes(b"partial")
    running = dataclasses.replace(running, report_path=str(w.running_files[0]), output_path=str(w.running_files[1]))
    assert await store.save(running, expect_state=JobState.RUNNING)
    w.running = running
    # An old job that ended without a report, and an unrecorded folder under its id.
    w.no_report = await add_finished(
        store, None, notebook="a.ipynb", finished_at=NOW - timedelta(days=40), report=False
    )
    w.orphan = reports_dir / str(w.no_report.id) / "leftover.txt"
    w.orphan.parent.mkdir()
    w.orphan.write_text("not recorded")
    return w


async def check_exactly_deleted(store: SqlJobStore, world: World, deleted: set[int]) -> None:
    for job in world.all_reports:
        folder = Path(job.report_path or "").parent
        stored = await store.get_job(job.id)
        if job.id in deleted:
            assert not folder.exists(), job
            assert stored == dataclasses.replace(job, report_path=None, output_path=None)
        else:
            assert Path(job.report_path or "").read_bytes() == HTML, job
            assert Path(job.output_path or "").read_bytes() == IPYNB, job
            assert stored == job
    assert world.running is not None and world.no_report is not None and world.orphan is not None
    assert await store.get_job(world.running.id) == world.running
    assert all(path.read_bytes() == b"partial" for path in world.running_files)
    assert await store.get_job(world.no_report.id) == world.no_report
    assert world.orphan.read_text() == "not recorded"
    assert await store.count_reports() == len(world.all_reports) + 1 - len(deleted)


# retention -----------------------------------------------------------------------------------------------------------
RETENTION_CASES = {
    "neither": ({}, {}),
    "keep_last=2": (
        {"keep_last": 2},
        {"a.ipynb": [0, 1, 2, 3], "sub/b.ipynb": [0, 1, 2, 3], "c.ipynb": [0, 1, 2, 3]},
    ),
    "keep_days=3": ({"keep_days": 3}, {"a.ipynb": [0, 1, 2], "sub/b.ipynb": [0, 1, 2, 3, 4, 5]}),
    "both": (
        {"keep_last": 2, "keep_days": 3},
        {"a.ipynb": [0, 1, 2, 3], "sub/b.ipynb": [0, 1, 2, 3, 4, 5], "c.ipynb": [0, 1, 2, 3]},
    ),
    "both, loose": ({"keep_last": 5, "keep_days": 8}, {"a.ipynb": [0], "sub/b.ipynb": [0, 1], "c.ipynb": [0]}),
    "keep_days=0.25": (
        {"keep_days": 0.25},
        {"a.ipynb": [0, 1, 2, 3, 4, 5], "sub/b.ipynb": [0, 1, 2, 3, 4, 5], "c.ipynb": [0, 1, 2, 3]},
    ),
}


@pytest.mark.parametrize(("policy", "expected"), RETENTION_CASES.values(), ids=RETENTION_CASES.keys())
async def test_retention_deletes_exactly_what_the_policy_says(
    store: SqlJobStore, reports_dir: Path, world: World, policy: dict[str, float], expected: dict[str, list[int]]
) -> None:
    reports = history(store, reports_dir, **policy)
    want = world.pick(expected)

    deleted = await reports.apply_retention(now=NOW)

    assert sorted(deleted) == sorted(want)
    assert len(deleted) == len(set(deleted))
    await check_exactly_deleted(store, world, want)
    # Applying it again finds nothing more to do.
    assert await reports.apply_retention(now=NOW) == []
    await check_exactly_deleted(store, world, want)


async def test_keep_last_counts_only_reports_still_there(store: SqlJobStore, reports_dir: Path, world: World) -> None:
    # Deleting the two newest of a.ipynb by hand: keep_last=2 then keeps the two before them.
    newest = world.reports["a.ipynb"][-2:]
    for job in newest:
        await history(store, reports_dir).delete(ROOT, job.id)
    deleted = await history(store, reports_dir, keep_last=2).apply_retention(now=NOW)
    assert sorted(deleted) == sorted(
        world.pick({"a.ipynb": [0, 1], "sub/b.ipynb": [0, 1, 2, 3], "c.ipynb": [0, 1, 2, 3]})
    )
    assert all(Path(job.report_path or "").exists() for job in world.reports["a.ipynb"][2:4])


async def test_keep_last_counts_across_users(store: SqlJobStore, reports_dir: Path) -> None:
    alice_old = await add_finished(store, reports_dir, owner="alice", finished_at=NOW - timedelta(hours=3))
    bob_mid = await add_finished(store, reports_dir, owner="bob", finished_at=NOW - timedelta(hours=2))
    alice_new = await add_finished(store, reports_dir, owner="alice", finished_at=NOW - timedelta(hours=1))
    assert await history(store, reports_dir, keep_last=2).apply_retention(now=NOW) == [alice_old.id]
    assert {j.id for j in await store.list_reports()} == {bob_mid.id, alice_new.id}


async def test_keep_days_is_measured_from_finished_at(store: SqlJobStore, reports_dir: Path) -> None:
    just_inside = await add_finished(store, reports_dir, finished_at=NOW - timedelta(days=2, seconds=-1))
    just_over = await add_finished(store, reports_dir, finished_at=NOW - timedelta(days=2, seconds=1))
    assert await history(store, reports_dir, keep_days=2).apply_retention(now=NOW) == [just_over.id]
    assert (await store.get_job(just_inside.id)) == just_inside


async def test_retention_keeps_going_past_a_failing_report(
    store: SqlJobStore, reports_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = [await add_finished(store, reports_dir, finished_at=NOW - timedelta(days=10)) for _ in range(3)]
    reports = history(store, reports_dir, keep_days=1)
    real = reports._remove_folder

    def flaky(folder: Path) -> None:
        if folder.name == str(old[1].id):
            raise PermissionError(f"cannot remove {folder}")
        real(folder)

    monkeypatch.setattr(reports, "_remove_folder", flaky)
    with caplog.at_level(logging.ERROR, logger="nbrelay.reports"):
        assert sorted(await reports.apply_retention(now=NOW)) == [old[0].id, old[2].id]
    assert f"job {old[1].id} failed" in caplog.text
    assert (await store.get_job(old[1].id)) == old[1]  # files first: the failed one stays recorded, whole
    monkeypatch.setattr(reports, "_remove_folder", real)
    assert await reports.apply_retention(now=NOW) == [old[1].id]


async def test_run_forever_runs_at_once_then_every_interval_and_survives_errors(
    store: SqlJobStore, reports_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reports = history(store, reports_dir, keep_last=1)
    calls = 0
    third = asyncio.Event()

    async def apply(now: datetime | None = None) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        if calls == 1:
            raise RuntimeError("database away")
        return []

    monkeypatch.setattr(reports, "apply_retention", apply)
    with caplog.at_level(logging.ERROR, logger="nbrelay.reports"):
        task = asyncio.create_task(reports.run_forever(0.01))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert calls == 1  # at once, before the first interval
        await asyncio.wait_for(third.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert "report retention failed" in caplog.text and "database away" in caplog.text


async def test_run_forever_really_deletes(store: SqlJobStore, reports_dir: Path) -> None:
    old = await add_finished(store, reports_dir, finished_at=datetime.now(UTC) - timedelta(days=3))
    new = await add_finished(store, reports_dir, finished_at=datetime.now(UTC))
    task = asyncio.create_task(history(store, reports_dir, keep_days=1).run_forever(3600))
    try:
        for _ in range(500):
            if (await store.count_reports()) == 1:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [j.id for j in await store.list_reports()] == [new.id]
    assert not (reports_dir / str(old.id)).exists()


@pytest.mark.parametrize("policy", [{"keep_last": 0}, {"keep_last": -1}, {"keep_days": 0}, {"keep_days": -2.5}])
def test_nonsense_policies_are_refused(store: SqlJobStore, reports_dir: Path, policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        history(store, reports_dir, **policy)


# path safety ---------------------------------------------------------------------------------------------------------
async def test_paths_outside_the_jobs_folder_are_never_deleted(
    store: SqlJobStore, reports_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.html").write_bytes(HTML)
    (elsewhere / "x.ipynb").write_bytes(IPYNB)
    victim = await add_finished(store, reports_dir, notebook="victim.ipynb")  # another job's folder
    victim_folder = Path(victim.report_path or "").parent
    linked = await add_finished(store, reports_dir, finished_at=NOW - timedelta(days=9), report=False)
    (reports_dir / str(linked.id)).symlink_to(elsewhere, target_is_directory=True)

    cases = [
        (elsewhere / "x.html", elsewhere / "x.ipynb"),  # outside reports_dir
        (victim_folder / "victim.html", victim_folder / "victim.ipynb"),  # inside, but another job's folder
        (reports_dir / "x" / ".." / ".." / "elsewhere" / "x.html", elsewhere / "x.ipynb"),  # '..' out
        (reports_dir, reports_dir),  # the reports folder itself
        (Path("reports/1/x.html"), Path("reports/1/x.ipynb")),  # relative: refused whatever it resolves to
    ]
    odd = [await add_finished(store, reports_dir, finished_at=NOW - timedelta(days=9), paths=paths) for paths in cases]
    # A job whose own folder is a symlink to elsewhere: its paths read as inside, but resolve outside.
    symlinked = dataclasses.replace(
        linked,
        report_path=str(reports_dir / str(linked.id) / "x.html"),
        output_path=str(reports_dir / str(linked.id) / "x.ipynb"),
    )
    assert await store.save(symlinked, expect_state=linked.state)
    odd.append(symlinked)

    reports = history(store, reports_dir, keep_days=3)
    await reports.delete(ROOT, odd[0].id)  # by hand
    deleted = await reports.apply_retention(now=NOW)  # and by retention

    # They are forgotten by the store (the report URLs no longer lead to those files) ...
    assert sorted(deleted) == sorted(job.id for job in odd[1:])
    for job in odd:
        stored = await store.get_job(job.id)
        assert stored is not None and stored.report_path is None and stored.output_path is None
    # ... but nothing on disk was touched.
    assert (elsewhere / "x.html").read_bytes() == HTML and (elsewhere / "x.ipynb").read_bytes() == IPYNB
    assert (victim_folder / "victim.html").read_bytes() == HTML
    assert (reports_dir / str(linked.id)).is_symlink()
    assert reports_dir.is_dir() and victim_folder.is_dir()
    assert await store.get_job(victim.id) == victim


async def test_a_symlink_in_place_of_the_folder_is_not_followed(
    store: SqlJobStore, reports_dir: Path, tmp_path: Path
) -> None:
    job = await add_finished(store, reports_dir)
    folder = reports_dir / str(job.id)
    # Swapped for a symlink after the paths were checked: removal must still not follow it.
    elsewhere = tmp_path / "elsewhere"
    folder.rename(elsewhere)
    folder.symlink_to(elsewhere, target_is_directory=True)
    history(store, reports_dir)._remove_folder(folder)
    assert folder.is_symlink() and (elsewhere / "a.html").exists()


# list and delete -----------------------------------------------------------------------------------------------------
async def test_list_shows_own_reports_newest_first(store: SqlJobStore, reports_dir: Path, world: World) -> None:
    reports = history(store, reports_dir)
    assert world.running is not None

    mine, total = await reports.list(ALICE, limit=500)
    expected = sorted((j for j in [*world.all_reports, world.running] if j.owner == "alice"), key=lambda j: -j.id)
    assert [e["job"] for e in mine] == [j.id for j in expected]
    assert total == len(expected)
    assert {e["owner"] for e in mine} == {"alice"}

    theirs, total = await reports.list(BOB, limit=500)
    assert {e["owner"] for e in theirs} == {"bob"} and total == 9
    everyone, total = await reports.list(ROOT, limit=500)
    assert total == len(world.all_reports) + 1 and [e["job"] for e in everyone] == sorted(
        (e["job"] for e in everyone), reverse=True
    )
    assert world.no_report is not None and world.no_report.id not in {e["job"] for e in everyone}


async def test_list_filters_by_notebook_and_pages(store: SqlJobStore, reports_dir: Path, world: World) -> None:
    reports = history(store, reports_dir)
    b_jobs = [j.id for j in reversed(world.reports["sub/b.ipynb"])]
    page, total = await reports.list(ROOT, notebook="sub/b.ipynb", limit=4)
    assert [e["job"] for e in page] == b_jobs[:4] and total == 6
    page, total = await reports.list(ROOT, notebook="sub/b.ipynb", limit=4, offset=4)
    assert [e["job"] for e in page] == b_jobs[4:] and total == 6
    page, total = await reports.list(ALICE, notebook="sub/b.ipynb")
    assert {e["notebook"] for e in page} == {"sub/b.ipynb"} and {e["owner"] for e in page} == {"alice"}
    assert total == 3
    assert await reports.list(ROOT, notebook="missing.ipynb") == ([], 0)


async def test_list_entry_shape(store: SqlJobStore, reports_dir: Path) -> None:
    job = await add_finished(store, reports_dir, notebook="sub/b.ipynb", state=JobState.FAILED)
    (entry,), total = await history(store, reports_dir).list(ALICE)
    assert total == 1
    assert entry == {
        "job": job.id,
        "owner": "alice",
        "notebook": "sub/b.ipynb",
        "state": "failed",
        "parameters": {"n": 3},
        "created_at": job.created_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "finished_at": "2026-03-10T12:00:00.000Z",
        "duration_s": 90.0,
        "size_bytes": len(HTML) + len(IPYNB),
        "report_url": f"/api/jobs/{job.id}/report",
        "notebook_url": f"/api/jobs/{job.id}/notebook",
    }
    # Files gone from disk (by someone else): still listed, with size 0.
    Path(job.output_path or "").unlink()
    (entry,), _ = await history(store, reports_dir).list(ALICE)
    assert entry["size_bytes"] == len(HTML)


async def test_delete_removes_files_and_clears_the_job(store: SqlJobStore, reports_dir: Path) -> None:
    job = await add_finished(store, reports_dir)
    keep = await add_finished(store, reports_dir)
    reports = history(store, reports_dir)

    cleared = await reports.delete(ALICE, job.id)

    assert cleared == dataclasses.replace(job, report_path=None, output_path=None)
    assert await store.get_job(job.id) == cleared
    assert not (reports_dir / str(job.id)).exists()
    assert (reports_dir / str(keep.id)).is_dir() and await store.get_job(keep.id) == keep
    with pytest.raises(NotFound) as again:
        await reports.delete(ALICE, job.id)
    assert again.value.code == "report_not_found"
    assert [e["job"] for e in (await reports.list(ALICE))[0]] == [keep.id]


async def test_delete_of_someone_elses_or_missing_report_is_not_found(store: SqlJobStore, reports_dir: Path) -> None:
    job = await add_finished(store, reports_dir, owner="alice")
    bare = await add_finished(store, reports_dir, owner="bob", report=False)
    reports = history(store, reports_dir)
    for user, job_id in ((BOB, job.id), (BOB, 999_999), (BOB, bare.id), (ROOT, bare.id)):
        with pytest.raises(NotFound) as refused:
            await reports.delete(user, job_id)
        assert refused.value.code == "report_not_found" and refused.value.status == 404
    assert (reports_dir / str(job.id)).is_dir() and await store.get_job(job.id) == job
    await reports.delete(ROOT, job.id)  # an admin may
    assert not (reports_dir / str(job.id)).exists()


async def test_an_unfinished_jobs_report_cannot_be_deleted(store: SqlJobStore, reports_dir: Path) -> None:
    running = await add_running(store, reports_dir)
    (reports_dir / str(running.id)).mkdir()
    queued = await store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    reports = history(store, reports_dir)
    for job in (running, queued):
        with pytest.raises(Conflict) as refused:
            await reports.delete(ALICE, job.id)
        assert refused.value.status == 409 and refused.value.code == "job_unfinished"
    with pytest.raises(NotFound):  # someone else's running job: not found rather than conflict
        await reports.delete(BOB, running.id)
    assert (reports_dir / str(running.id)).is_dir()
