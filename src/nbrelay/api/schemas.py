"""Request bodies and the JSON shape of a job, as the API documents them (OpenAPI at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nbrelay.models import Job, isoformat


class SubmitJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notebook: str = Field(..., min_length=1, max_length=4096, description="path of the notebook in the workspace")
    parameters: dict[str, Any] = Field(default_factory=dict, description="values for the notebook's parameters")
    timeout_s: float | None = Field(None, gt=0, description="whole-job timeout in seconds")
    cell_timeout_s: float | None = Field(None, gt=0, description="per-cell timeout in seconds")
    kernel_name: str | None = Field(None, min_length=1, max_length=200, description="default: the notebook's kernel")
    steps: list[dict[str, Any]] | None = Field(
        None,
        description="post-run file steps (at most 20): {action: copy|move|delete, source: report|notebook|<glob>, "
        "to: <path template>, when: success|always, overwrite: bool}; absent or null: the notebook's "
        "metadata.nbrelay.steps; []: none",
    )


def job_json(job: Job, queue_position: int | None = None) -> dict[str, Any]:
    return {
        "id": job.id,
        "owner": job.owner,
        "notebook": job.notebook,
        "kernel_name": job.kernel_name,
        "parameters": job.parameters,
        "state": job.state.value,
        "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
        "duration_s": job.duration_s,
        "timeout_s": job.timeout_s,
        "cell_timeout_s": job.cell_timeout_s,
        "progress": {"cell": job.progress_cell, "total": job.progress_total},
        "queue_position": queue_position,
        "cancel_requested": job.cancel_requested,
        "error": job.error.to_dict() if job.error else None,
        "report_url": f"/api/jobs/{job.id}/report" if job.report_path else None,
        "notebook_url": f"/api/jobs/{job.id}/notebook" if job.output_path else None,
        "steps": job.steps,
        "step_results": job.step_results,
    }
