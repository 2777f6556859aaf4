"""What the steps tests share: a finished job, and running raw steps on a workspace folder."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbrelay.files import Areas, Workspace
from nbrelay.models import Job, JobState
from nbrelay.steps import run_steps, validate_steps

FINISHED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
REPORT = "<html><body>the report</body></html>"


def make_job(state: JobState = JobState.SUCCEEDED, **kw: Any) -> Job:
    values: dict[str, Any] = {
        "id": 42,
        "owner": "alice",
        "notebook": "analysis/weekly.ipynb",
        "kernel_name": "python3",
        "state": state,
        "finished_at": FINISHED,
    }
    values.update(kw)
    return Job(**values)


def run(
    ws: Path,
    raw_steps: list[dict[str, Any]],
    *,
    job: Job | None = None,
    artifacts: tuple[Path, Path] | None = None,
    succeeded: bool | None = None,
    areas: Areas | None = None,
) -> list[dict[str, Any]]:
    job = job or make_job()
    checked = validate_steps(raw_steps, parameters=job.parameters)
    report, output = artifacts or (None, None)
    return run_steps(
        checked,
        job=job,
        workspace=Workspace(ws),
        report_path=report,
        output_path=output,
        succeeded=job.state is JobState.SUCCEEDED if succeeded is None else succeeded,
        areas=areas,
    )


def leftovers(folder: Path) -> list[str]:
    """Temporary files anywhere below `folder` (a copy must never leave one)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))
