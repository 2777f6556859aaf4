"""The JSON body of a job's notification, Standard Webhooks shaped: {"type", "timestamp", "data"} (pure)."""

from __future__ import annotations

from typing import Any

from nbrelay.models import STATE_EVENT, Job, JobError, JobState, isoformat

# The events a webhook can ask for: the terminal ones.
WEBHOOK_EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "job.timed_out")
# E-mail rules name states ("failed", …), as schedules' notify_on does.
EMAIL_STATES = ("succeeded", "failed", "cancelled", "timed_out")
ERROR_SUMMARY_MAX_CHARS = 1000


def job_payload(job: Job) -> dict[str, Any]:
    """The body announcing `job`'s terminal state. `report_url` is relative to the service's root here;
    `absolute` makes it a full URL when the body is sent."""
    error = job.error
    return {
        "type": STATE_EVENT[job.state],
        "timestamp": isoformat(job.finished_at),
        "data": {
            "job_id": job.id,
            "owner": job.owner,
            "notebook": job.notebook,
            "state": job.state.value,
            "submitted_at": isoformat(job.created_at),
            "started_at": isoformat(job.started_at),
            "finished_at": isoformat(job.finished_at),
            "duration_s": round(job.duration_s, 3) if job.duration_s is not None else None,
            "report_url": job.report_url,
            "failing_cell": error.cell if error else None,
            "error": _summary(error_text(error, job.state)) if error else None,
            "schedule_id": job.schedule_id,
            "attempt": job.attempt,
        },
    }


def error_text(error: JobError, state: JobState) -> str:
    """What to tell of `error`: the exception a cell raised when that is why the job failed; else the reason.

    A timeout or a cancel interrupts the running cell, so the cell's error then reads "KeyboardInterrupt: " and
    says nothing; the reason ("job exceeded its timeout of 2 s", "cancelled by request") is what people need.
    """
    raised = f"{error.ename}: {error.evalue}" if error.ename else ""
    if raised and state is JobState.FAILED and error.ename != "KeyboardInterrupt":
        return raised
    return error.reason or raised


def _summary(text: str) -> str:
    return text if len(text) <= ERROR_SUMMARY_MAX_CHARS else text[: ERROR_SUMMARY_MAX_CHARS - 1] + "…"


def absolute(payload: dict[str, Any], public_url: str) -> dict[str, Any]:
    """`payload` with its report URL under `public_url` (e.g. https://nbrelay.example.com/base); unchanged
    (relative to the service's root) when there is no public URL."""
    data = payload.get("data") or {}
    url = data.get("report_url")
    if not public_url or not url or not url.startswith("/"):
        return payload
    return {**payload, "data": {**data, "report_url": public_url.rstrip("/") + url}}
