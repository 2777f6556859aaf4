"""Report history: list the reports of finished jobs, delete one (the job stays, without its report)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from nbrelay.api.auth import CurrentUser
from nbrelay.api.openapi import error_responses
from nbrelay.api.schemas import JobId, Limit, Offset
from nbrelay.reports import ReportHistory

router = APIRouter(prefix="/api", tags=["reports"])


def history(request: Request) -> ReportHistory:
    return request.app.state.reports


History = Annotated[ReportHistory, Depends(history)]


@router.get("/reports", summary="Reports of finished jobs, newest first")
async def list_reports(
    reports: History,
    user: CurrentUser,
    notebook: Annotated[str | None, Query(description="only this notebook's reports (its workspace path)")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    entries, total = await reports.list(user, notebook=notebook, limit=limit, offset=offset)
    return {"reports": entries, "total": total, "limit": limit, "offset": offset}


@router.delete(
    "/reports/{job_id}",
    summary="Delete a finished job's report and executed notebook",
    responses=error_responses(404, 409),
)
async def delete_report(job_id: JobId, reports: History, user: CurrentUser) -> dict[str, Any]:
    await reports.delete(user, job_id)
    return {"deleted": job_id}
