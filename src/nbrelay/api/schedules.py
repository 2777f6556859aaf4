"""Schedules: create, list, read, change (pause and resume are `enabled`), delete, and run now."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from nbrelay.api.auth import CurrentUser
from nbrelay.api.openapi import error_responses
from nbrelay.api.schemas import WORKSPACE_PATH_PATTERN, Seconds, job_json, json_value
from nbrelay.schedules.service import ScheduleService
from nbrelay.schedules.tick_values import TICK_NAMES
from nbrelay.store.base import MAX_ID

router = APIRouter(prefix="/api", tags=["schedules"])

ScheduleId = Annotated[int, Path(ge=1, le=MAX_ID, description="the schedule's id")]
NotifyState = Literal["succeeded", "failed", "cancelled", "timed_out"]
_PLACEHOLDERS = ", ".join("{{ " + name + " }}" for name in TICK_NAMES)


def service(request: Request) -> ScheduleService:
    return request.app.state.schedules


Service = Annotated[ScheduleService, Depends(service)]


# 404: no such schedule (or notebook) visible to you; 422: it cannot run as given (`field` names what is wrong:
# cron, timezone, …). What the app around answers (401, 403, 413, …) is added to every route by api/openapi.py.
ERRORS = error_responses(404, 422)
_NOTEBOOK_PATH: JsonDict = {"pattern": WORKSPACE_PATH_PATTERN}
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text)


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, pattern=_PRINTABLE, description="a label for people")
    notebook: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description="path of the notebook in the workspace",
        json_schema_extra=_NOTEBOOK_PATH,
    )
    cron: str = Field(
        ...,
        min_length=1,
        max_length=200,
        description="five fields (minute hour day-of-month month day-of-week), or @yearly @annually @monthly "
        "@weekly @daily @midnight @hourly",
        examples=["0 9 * * MON-FRI"],
    )
    timezone: str = Field("UTC", min_length=1, max_length=64, description="IANA name", examples=["Europe/Berlin"])
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description=f"values for the notebook's parameters; in a string value {_PLACEHOLDERS} become the tick's "
        "time in the schedule's time zone",
    )
    enabled: bool = Field(True, description="false: paused")
    timeout_s: Seconds = Field(None, gt=0, description="whole-job timeout of each run, in seconds")
    cell_timeout_s: Seconds = Field(None, gt=0, description="per-cell timeout of each run, in seconds")
    kernel_name: str | None = Field(None, min_length=1, max_length=200, description="default: the notebook's")
    steps: list[dict[str, Any]] | None = Field(
        None, description="post-run file steps as for POST /api/jobs; null: the notebook's metadata.nbrelay.steps"
    )
    overlap: Literal["skip", "queue"] = Field(
        "skip", description="a tick while the previous run is unfinished: skip it, or queue it to run after"
    )
    missed: Literal["run_once", "skip"] = Field(
        "run_once", description="ticks that fell while the service was down: one catch-up run, or none"
    )
    notify_email: list[str] = Field(default_factory=list, max_length=20, description="who gets an e-mail")
    notify_on: list[NotifyState] = Field(default_factory=list, description="after which ends of a run")


class CreateSchedule(_Fields):
    _json = field_validator("parameters", "steps")(json_value)


# Fields where null is a value, not "leave it": PATCH {"timeout_s": null} removes the timeout.
_NULLABLE = {"name", "timeout_s", "cell_timeout_s", "kernel_name", "steps"}


class ChangeSchedule(BaseModel):
    """Only the fields given change (`{"enabled": false}` pauses)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200, pattern=_PRINTABLE)
    notebook: str | None = Field(None, min_length=1, max_length=4096, json_schema_extra=_NOTEBOOK_PATH)
    cron: str | None = Field(None, min_length=1, max_length=200)
    timezone: str | None = Field(None, min_length=1, max_length=64)
    parameters: dict[str, Any] | None = None
    enabled: bool | None = None
    timeout_s: Seconds = Field(None, gt=0)
    cell_timeout_s: Seconds = Field(None, gt=0)
    kernel_name: str | None = Field(None, min_length=1, max_length=200)
    steps: list[dict[str, Any]] | None = None
    overlap: Literal["skip", "queue"] | None = None
    missed: Literal["run_once", "skip"] | None = None
    notify_email: list[str] | None = Field(None, max_length=20)
    notify_on: list[NotifyState] | None = None

    _json = field_validator("parameters", "steps")(json_value)

    @model_validator(mode="after")
    def _null_only_where_it_is_a_value(self) -> ChangeSchedule:
        given_null = sorted(k for k in self.model_fields_set - _NULLABLE if getattr(self, k) is None)
        if given_null:  # it was taken as "leave it" and answered 200: the field given did not change
            raise ValueError(
                f"{', '.join(given_null)}: null is no value of this field (only {', '.join(sorted(_NULLABLE))} "
                "take null, to clear them); leave a field out to keep it"
            )
        return self


class LastRun(BaseModel):
    job_id: int
    state: str
    created_at: str | None
    finished_at: str | None


class LastTick(BaseModel):
    tick_at: str | None
    outcome: Literal["started", "skipped", "waiting", "failed"]
    job_id: int | None
    error: str | None


class ScheduleOut(_Fields):
    model_config = ConfigDict(extra="allow")

    id: int
    owner: str
    state: Literal["active", "paused"]
    created_at: str | None
    updated_at: str | None
    next_runs: list[str] = Field(..., description="the next 5 fire times, ISO 8601 with offset ([] while paused)")
    last_run: LastRun | None = Field(..., description="the newest job the schedule started")
    last_tick: LastTick | None = Field(..., description="what the latest tick did")


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]


@router.post(
    "/schedules",
    status_code=201,
    response_model=ScheduleOut,
    responses=ERRORS,
    summary="Create a schedule: the notebook runs at each tick of its cron expression",
)
async def create_schedule(body: CreateSchedule, schedules: Service, user: CurrentUser) -> JSONResponse:
    schedule = await schedules.create(user, body.model_dump())
    view = await schedules.view(schedule)
    return JSONResponse(view, status_code=201, headers={"Location": f"/api/schedules/{schedule.id}"})


@router.get("/schedules", response_model=ScheduleList, summary="Your schedules (an admin's: everyone's)")
async def list_schedules(schedules: Service, user: CurrentUser) -> dict[str, Any]:
    return {"schedules": await schedules.views(await schedules.visible(user))}


@router.get("/schedules/{schedule_id}", response_model=ScheduleOut, responses=ERRORS, summary="One schedule")
async def get_schedule(schedule_id: ScheduleId, schedules: Service, user: CurrentUser) -> dict[str, Any]:
    return await schedules.view(await schedules.get(user, schedule_id))


@router.patch(
    "/schedules/{schedule_id}",
    response_model=ScheduleOut,
    responses=ERRORS,
    summary='Change a schedule; {"enabled": false} pauses it, {"enabled": true} resumes it',
)
async def change_schedule(
    schedule_id: ScheduleId, body: ChangeSchedule, schedules: Service, user: CurrentUser
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)  # a null is given only where it clears (ChangeSchedule)
    return await schedules.view(await schedules.update(user, schedule_id, changes))


@router.delete(
    "/schedules/{schedule_id}",
    status_code=204,
    responses=ERRORS,
    summary="Delete a schedule (its jobs stay, with their schedule_id)",
)
async def delete_schedule(schedule_id: ScheduleId, schedules: Service, user: CurrentUser) -> None:
    await schedules.delete(user, schedule_id)


@router.post(
    "/schedules/{schedule_id}/run",
    status_code=202,
    responses=ERRORS,
    summary="Run the schedule's notebook now: answers at once with the queued job (as POST /api/jobs)",
)
async def run_schedule_now(schedule_id: ScheduleId, schedules: Service, user: CurrentUser) -> JSONResponse:
    job = await schedules.run_now(user, schedule_id)
    position = await schedules.jobs.position(job)
    return JSONResponse(job_json(job, position), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})
