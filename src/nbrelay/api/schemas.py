"""Request bodies and the JSON shape of a job, as the API documents them (OpenAPI at /docs).

Errors are documented from one model: `nbrelay.api.openapi.error_responses(404, …)` for a route's own statuses.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from nbrelay.models import Job, isoformat
from nbrelay.store.base import MAX_ID
from nbrelay.text import lone_surrogate, refusal

# Every integer in a path or a query is bounded: a value the database cannot hold is a 422, never a driver error.
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="the job's id")]
Limit = Annotated[int, Query(ge=1, le=500, description="how many at most")]
Offset = Annotated[int, Query(ge=0, le=MAX_ID, description="how many to skip")]

# What Workspace.resolve accepts, as far as a pattern can say it: relative (no '/' or drive letter first), no '.' or
# '..' part, no control character, backslash or '%'. Documented, not enforced here: the server's own answer (400
# path_refused) says what is wrong with a path. No lookaheads and no counted lengths (said in words instead): tools
# that generate requests from the document (schemathesis) spent minutes per string on those.
_CHAR = r"[^/\\\x00-\x1f\x7f%]"
_NOT_DOT = r"[^/\\\x00-\x1f\x7f%.]"
_NAME = rf"(?:{_NOT_DOT}{_CHAR}*|\.{_NOT_DOT}{_CHAR}*|\.\.{_CHAR}+)"
_FIRST = (  # the first name: not a drive ("C:"), nor blank
    rf"(?:[^/\\\x00-\x1f\x7f%.A-Za-z\s]{_CHAR}*|[A-Za-z](?:[^/\\\x00-\x1f\x7f%:]{_CHAR}*)?"
    rf"|\.{_NOT_DOT}{_CHAR}*|\.\.{_CHAR}+)"
)
WORKSPACE_PATH_PATTERN = rf"^{_FIRST}(?:/+{_NAME})*/*$"
# One file name (a copy's or a new folder's): no '/', not '.', '..' or blank.
_SOLID = r"[^/\\\x00-\x1f\x7f%.\s]"
FILE_NAME_PATTERN = rf"^(?:{_SOLID}{_CHAR}*|\.{_SOLID}{_CHAR}*|\.\.{_SOLID}{_CHAR}*)$"
PATH_LIMITS = "at most 4096 bytes, a name at most 255"
WorkspacePath = Annotated[
    str,
    Path(description=f"a path in the workspace ({PATH_LIMITS})", json_schema_extra={"pattern": WORKSPACE_PATH_PATTERN}),
]
MAX_JSON_DEPTH = 64


def nested_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON `value` nests lists and objects deeper than `limit` (looked at without recursion)."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            item
            for node in level
            if isinstance(node, (list, dict))
            for item in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return True


def json_value(value: Any) -> Any:
    """A JSON value a request brings as it is (parameters, steps): nested at most MAX_JSON_DEPTH levels, and every
    string whole text (text.py), since it is stored and shown again."""
    if nested_too_deep(value):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    found = lone_surrogate(value)
    if found is not None:
        raise ValueError(refusal(found))
    return value


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # a number in lax validation (true = 1 s): never what was meant
        raise ValueError("expected a number of seconds, not true or false")
    return value


Seconds = Annotated[float | None, BeforeValidator(_not_a_boolean)]


class SubmitJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notebook: str = Field(
        ...,
        min_length=1,
        description=f"path of the notebook in the workspace ({PATH_LIMITS})",
        json_schema_extra={"pattern": WORKSPACE_PATH_PATTERN},
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="values for the notebook's parameters")
    timeout_s: Seconds = Field(None, gt=0, description="whole-job timeout in seconds")
    cell_timeout_s: Seconds = Field(None, gt=0, description="per-cell timeout in seconds")
    kernel_name: str | None = Field(None, min_length=1, max_length=200, description="default: the notebook's kernel")
    steps: list[dict[str, Any]] | None = Field(
        None,
        description="post-run file steps (at most 20): {action: copy|move|delete, source: report|notebook|<glob>, "
        "to: <path template>, when: success|always, overwrite: bool}; absent or null: the notebook's "
        "metadata.nbrelay.steps; []: none",
    )

    @field_validator("notebook")
    @classmethod
    def _not_too_long(cls, value: str) -> str:
        if len(value) > 4096:  # checked here, not as maxLength: see WORKSPACE_PATH_PATTERN
            raise ValueError("a path has at most 4096 characters")
        return value

    _json = field_validator("parameters", "steps")(json_value)


def job_json(job: Job, queue_position: int | None = None) -> dict[str, Any]:
    """A job as the REST API answers it; the push snapshot and `nbrelay run --local` show the same."""
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
        # cell: the cells done (1 to cell), counted as the report's In [n]; phase: Job.phase
        "progress": {"cell": job.progress_cell, "total": job.progress_total, "phase": job.phase},
        "queue_position": queue_position,
        "cancel_requested": job.cancel_requested,
        "error": job.error.to_dict() if job.error else None,
        "report_url": job.report_url,
        "notebook_url": job.notebook_url,
        "steps": job.steps,
        "step_results": job.step_results,
        "attempt": job.attempt,  # 2, 3, … after the job was re-queued because its worker was lost
        "worker": job.worker,  # the worker running (or that ran) it
        "schedule_id": job.schedule_id,  # the schedule that started it, or null
    }
