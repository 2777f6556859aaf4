"""Jobs: submit, list, read, cancel, and the job's report and executed notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from nbrelay.api.auth import CurrentUser
from nbrelay.api.openapi import error_responses
from nbrelay.api.schemas import JobId, Limit, Offset, SubmitJob, job_json
from nbrelay.errors import NotFound, Unprocessable
from nbrelay.jobs import JobService, SubmitRequest
from nbrelay.models import UNFINISHED_STATES, Job, JobState
from nbrelay.store.base import MAX_ID

router = APIRouter(prefix="/api", tags=["jobs"])

CELLS_DOC = (
    "Cells are numbered from 1 as the report numbers them: the n-th code cell that runs is cell n, `In [n]` "
    "(markdown and empty cells have none). `progress`: `cell` (cells done), `total` (cells that will run), `phase` "
    "(`starting_kernel`, then `running_cells`, then `writing_report`; null unless running). `error.cell`: the cell "
    "that failed or was stopped, or null."
)

# Reports are untrusted HTML (notebook outputs carry scripts): a sandbox without same-origin keeps them away from
# the app's cookies and API; links may open tabs of their own (as the page's frame allows). A report loads nothing
# from anywhere (found from outside: an output's <img>, <iframe> or fetch() reached any host as the report was
# opened, telling it who read it): what it shows is inline or data:, as the report's export writes it.
REPORT_CSP = (
    "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox; default-src 'none'; "
    "script-src 'unsafe-inline' 'unsafe-eval' data: blob:; style-src 'unsafe-inline' data:; img-src data: blob:; "
    "font-src data:; media-src data: blob:; base-uri 'none'; form-action 'none'"
)
REPORT_HEADERS = {
    "Content-Security-Policy": REPORT_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, max-age=0",
}


def service(request: Request) -> JobService:
    return request.app.state.jobs


Service = Annotated[JobService, Depends(service)]


_STATE_NAMES = "|".join([s.value for s in JobState] + ["unfinished"])
# Documented, not enforced by FastAPI: _states answers what does not match with the states it knows.
STATES_PATTERN = rf"^$|^ *({_STATE_NAMES}) *(, *({_STATE_NAMES}) *)*$"


def _states(value: str | None) -> list[JobState] | None:
    if not value:
        return None
    states: set[JobState] = set()
    for part in value.split(","):
        part = part.strip()
        if part == "unfinished":
            states |= UNFINISHED_STATES
            continue
        try:
            states.add(JobState(part))
        except ValueError:
            known = ", ".join([s.value for s in JobState] + ["unfinished"])
            raise Unprocessable(f"unknown state {part!r}; use one of: {known}", code="invalid_state") from None
    return sorted(states)


@router.post(
    "/jobs",
    status_code=202,
    summary="Run a notebook: answers at once with the queued job",
    responses=error_responses(404),
)
async def submit_job(body: SubmitJob, jobs: Service, user: CurrentUser) -> JSONResponse:
    request = SubmitRequest(
        notebook=body.notebook,
        parameters=body.parameters,
        timeout_s=body.timeout_s,
        cell_timeout_s=body.cell_timeout_s,
        kernel_name=body.kernel_name,
        steps=body.steps,
    )
    job = await jobs.submit(user, request)
    position = await jobs.position(job)
    return JSONResponse(job_json(job, position), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})


@router.get("/jobs", summary="List jobs, newest first", description=CELLS_DOC)
async def list_jobs(
    jobs: Service,
    user: CurrentUser,
    state: Annotated[
        str | None,
        Query(description="comma-separated states, or 'unfinished'", json_schema_extra={"pattern": STATES_PATTERN}),
    ] = None,
    notebook: str | None = None,
    schedule_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="only the jobs this schedule started")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    found, total = await jobs.list(
        user, states=_states(state), notebook=notebook, schedule_id=schedule_id, limit=limit, offset=offset
    )
    return {
        "jobs": [job_json(job, position) for job, position in await jobs.with_positions(found)],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get(
    "/jobs/{job_id}",
    summary="One job: state, progress, queue position, error, report",
    description=CELLS_DOC,
    responses=error_responses(404),
)
async def get_job(job_id: JobId, jobs: Service, user: CurrentUser) -> dict[str, Any]:
    job = await jobs.get(user, job_id)
    return job_json(job, await jobs.position(job))


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    summary="Cancel a queued or running job",
    responses=error_responses(404),
)
async def cancel_job(job_id: JobId, jobs: Service, user: CurrentUser) -> dict[str, Any]:
    """A queued job ends at once (`cancelled`); a running one is interrupted, and killed after the grace period
    (`cancel_requested` is true until it has ended). A job that has already ended is answered as it ended: nothing
    to do, and no error, since it may have ended as the request was on its way."""
    job = await jobs.cancel(user, job_id)
    return job_json(job, await jobs.position(job))


def _artifact(job: Job, path: str | None, what: str) -> Path:
    if path and Path(path).is_file():
        return Path(path)
    code = f"no_{what.replace(' ', '_')}"
    if job.state.terminal and job.started_at is None:
        raise NotFound(f"job {job.id} ended ({job.state.value}) before it ran: it has no {what}", code=code)
    if job.state.terminal:
        # Every run that starts gets its report, a partial one included: one not there was deleted (found from
        # outside: "ended (succeeded) without a report" after DELETE /api/reports/1), or could not be written.
        raise NotFound(
            f"job {job.id} ended ({job.state.value}) and its {what} is not kept: it was deleted (by request or by "
            "the retention rules) or could not be written",
            code=code,
        )
    raise NotFound(f"job {job.id} has no {what} yet", code=f"{what.replace(' ', '_')}_not_ready")


@router.get(
    "/jobs/{job_id}/report",
    summary="The job's HTML report (sandboxed)",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}, "description": "the report"}, **error_responses(404)},
)
async def get_report(job_id: JobId, jobs: Service, user: CurrentUser) -> FileResponse:
    job = await jobs.get(user, job_id)
    path = _artifact(job, job.report_path, "report")
    return FileResponse(path, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)


@router.get(
    "/jobs/{job_id}/notebook",
    summary="The executed notebook (.ipynb)",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/x-ipynb+json": {}}, "description": "the notebook"},
        **error_responses(404),
    },
)
async def get_executed_notebook(job_id: JobId, jobs: Service, user: CurrentUser) -> FileResponse:
    job = await jobs.get(user, job_id)
    path = _artifact(job, job.output_path, "executed notebook")
    return FileResponse(path, media_type="application/x-ipynb+json", filename=f"{job_id}-{path.name}")
