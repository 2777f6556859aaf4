"""Report history: list the reports of finished jobs, delete them, and delete old ones by a retention policy.

A job's report is the folder `<reports_dir>/<job id>/` holding its HTML report and executed notebook, recorded in
the job's `report_path` and `output_path`. Deleting a report removes that folder, then clears both paths in the
store; the job itself stays in the job list. Files are removed first, so a failure between the two steps leaves a
job whose report answers 404 and that the next retention pass (or delete) finishes off.

Only the job's own folder under `reports_dir` is ever removed: a recorded path that resolves anywhere else (another
job's folder, outside `reports_dir`, through a symlink) is left on disk and only forgotten in the store.

Retention, run by `run_forever` in the background:

- `keep_last`: keep the newest `keep_last` reports of each notebook. "Newest" is by job id (submission order, as
  lists show them); the count is per notebook across all users (the setting is about disk use, which users share),
  and counts only finished jobs that still have a report, so deleting by hand never makes retention delete more.
- `keep_days`: delete the reports of jobs that finished more than `keep_days` days ago.

When both are set a report goes if either rule says so. Queued and running jobs are never touched.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import shutil
import stat
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nbrelay.errors import Conflict, NotFound, log_failure
from nbrelay.jobs import User
from nbrelay.models import Job, isoformat, utcnow
from nbrelay.store.base import JobStore

log = logging.getLogger(__name__)

_PAGE = 500


def _no_report(job_id: int) -> NotFound:
    # A job of someone else answers like a missing one: its existence is not ours to tell.
    return NotFound(f"no report for job {job_id}", code="report_not_found")


def _file_size(path: str | None) -> int:
    if not path:
        return 0
    try:
        info = os.stat(path)
    except OSError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def report_entry(job: Job, size_bytes: int) -> dict[str, Any]:
    """The JSON shape of one report in the history."""
    return {
        "job": job.id,
        "owner": job.owner,
        "notebook": job.notebook,
        "state": job.state.value,
        "parameters": job.parameters,
        "created_at": isoformat(job.created_at),
        "finished_at": isoformat(job.finished_at),
        "duration_s": job.duration_s,
        "size_bytes": size_bytes,
        "report_url": job.report_url,
        "notebook_url": job.notebook_url,
    }


class ReportHistory:
    def __init__(
        self,
        *,
        store: JobStore,
        reports_dir: Path,
        keep_last: int | None = None,
        keep_days: float | None = None,
    ):
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 (or None to keep any number), got {keep_last}")
        if keep_days is not None and not keep_days > 0:
            raise ValueError(f"keep_days must be more than 0 (or None to keep reports of any age), got {keep_days}")
        self.store = store
        self.reports_dir = reports_dir
        self.keep_last = keep_last
        self.keep_days = keep_days

    # read --------------------------------------------------------------------------------------------------
    async def list(
        self, user: User, *, notebook: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """The user's reports (an admin's: everyone's), newest first, and how many there are in all."""
        owner = None if user.admin else user.name
        jobs = await self.store.list_reports(notebook=notebook, owner=owner, limit=limit, offset=offset)
        total = await self.store.count_reports(notebook=notebook, owner=owner)
        sizes = await asyncio.to_thread(lambda: [_file_size(j.report_path) + _file_size(j.output_path) for j in jobs])
        return [report_entry(job, size) for job, size in zip(jobs, sizes, strict=True)], total

    # delete ------------------------------------------------------------------------------------------------
    async def delete(self, user: User, job_id: int) -> Job:
        """Delete the report of one of the user's finished jobs (an admin: of anyone's); the job without it."""
        job = await self.store.get_job(job_id)
        if job is None or not user.may_see(job):
            raise _no_report(job_id)
        if not job.state.terminal:
            raise Conflict(
                f"job {job_id} is {job.state.value}: its report can be deleted once it has finished",
                code="job_unfinished",
                state=job.state.value,
            )
        if job.report_path is None:
            raise _no_report(job_id)
        cleared = await self._remove(job)
        if cleared is None:  # the job itself went meanwhile
            raise _no_report(job_id)
        return cleared

    def report_folder(self, job: Job) -> Path | None:
        """The folder to remove for the job's report: `<reports_dir>/<job id>`, when a recorded path is in it.

        None when no recorded path resolves inside that folder: nothing on disk is the job's to remove then.
        """
        root = self.reports_dir.resolve()
        folder = root / str(job.id)
        inside = False
        for recorded in (job.report_path, job.output_path):
            if not recorded:
                continue
            path = Path(recorded)
            try:
                if not path.is_absolute():
                    raise ValueError("relative path")
                path.resolve().relative_to(folder)  # resolve() follows symlinks, so a link out is caught
            except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
                log.warning("job %s: not deleting %s: it is not in the job's report folder %s", job.id, path, folder)
                continue
            inside = True
        return folder if inside else None

    def _remove_folder(self, folder: Path) -> None:
        try:
            info = folder.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(info.st_mode):  # a symlink or a file where the folder should be: not ours to follow
            log.warning("not deleting %s: it is not a folder", folder)
            return
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile (a concurrent delete)
            shutil.rmtree(folder)

    def _remove_files(self, job: Job) -> None:
        folder = self.report_folder(job)
        if folder is not None:
            self._remove_folder(folder)

    async def _remove(self, job: Job) -> Job | None:
        await asyncio.to_thread(self._remove_files, job)
        return await self.store.clear_report(job.id)

    # retention ---------------------------------------------------------------------------------------------
    @property
    def retention_enabled(self) -> bool:
        return self.keep_last is not None or self.keep_days is not None

    async def _all_reports(self) -> builtins.list[Job]:
        found: dict[int, Job] = {}
        offset = 0
        while True:
            page = await self.store.list_reports(limit=_PAGE, offset=offset)
            for job in page:
                # A report finished during the walk shifts later pages by one: the repeat is dropped here.
                found.setdefault(job.id, job)
            if len(page) < _PAGE:
                break
            offset += _PAGE
        return sorted(found.values(), key=lambda job: job.id, reverse=True)

    def doomed(self, reports: Sequence[Job], now: datetime) -> builtins.list[Job]:
        """Of `reports` (newest first), those the policy deletes."""
        cutoff = now - timedelta(days=self.keep_days) if self.keep_days is not None else None
        kept_per_notebook: Counter[str] = Counter()
        doomed: builtins.list[Job] = []
        for job in reports:
            if not job.state.terminal:
                continue
            rank = kept_per_notebook[job.notebook]
            kept_per_notebook[job.notebook] += 1
            too_many = self.keep_last is not None and rank >= self.keep_last
            too_old = cutoff is not None and job.finished_at is not None and job.finished_at < cutoff
            if too_many or too_old:
                doomed.append(job)
        return doomed

    async def apply_retention(self, now: datetime | None = None) -> builtins.list[int]:
        """Delete the reports the policy says to; the ids of the jobs whose reports were deleted.

        Deleted means gone from the history; on disk only the job's own folder is removed (see the module doc).
        """
        if not self.retention_enabled:
            return []
        now = now or utcnow()
        deleted: builtins.list[int] = []
        for job in self.doomed(await self._all_reports(), now):
            try:
                current = await self.store.get_job(job.id)
                if current is None or current.report_path is None or not current.state.terminal:
                    continue  # deleted by hand meanwhile
                if await self._remove(current) is not None:
                    deleted.append(job.id)
            except Exception:
                log.exception("retention: deleting the report of job %s failed; trying again next pass", job.id)
        if deleted:
            log.info("retention deleted %d report(s): jobs %s", len(deleted), deleted)
        return deleted

    async def run_forever(self, interval_s: float) -> None:
        """Apply retention now and then every `interval_s` seconds, until cancelled; errors are logged, not fatal.

        Returns at once when no policy is set.
        """
        if not self.retention_enabled:
            return
        log.info("report retention: keep_last=%s, keep_days=%s, every %g s", self.keep_last, self.keep_days, interval_s)
        while True:
            try:
                await self.apply_retention()
            except Exception as exc:
                log_failure(log, exc, "report retention failed; trying again in %g s", interval_s)
            await asyncio.sleep(interval_s)
