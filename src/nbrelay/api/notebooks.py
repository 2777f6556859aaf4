"""Notebooks: what a notebook declares, so a form or the CLI can ask for the right values."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from nbrelay.api.auth import CurrentUser
from nbrelay.api.jobs import Service
from nbrelay.api.openapi import error_responses
from nbrelay.api.schemas import WorkspacePath
from nbrelay.runner.params import default_value
from nbrelay.steps import read_notebook_steps

router = APIRouter(prefix="/api", tags=["notebooks"])


@router.get(
    "/notebooks/{path:path}/parameters",
    summary="The notebook's declared parameters",
    responses=error_responses(400, 404, 413),
)
async def notebook_parameters(path: WorkspacePath, jobs: Service, user: CurrentUser) -> dict[str, Any]:
    info = await asyncio.to_thread(jobs.inspect, path, user)
    parameters = info.parameters
    steps = await asyncio.to_thread(read_notebook_steps, info.absolute)
    return {
        "notebook": info.path,
        "kernel_name": info.kernel_name,
        # A form for a notebook whose kernel is missing says so before anything is typed into it.
        "kernel_installed": await asyncio.to_thread(jobs.kernels.installed, info.kernel_name),
        "language": info.language,
        "inspectable": parameters is not None,
        "parameters": [{**p.to_dict(), "default_value": default_value(p)} for p in parameters or []],
        # The post-run steps a job without `steps` gets (metadata.nbrelay.steps, as written), or null.
        "default_steps": steps,
    }
