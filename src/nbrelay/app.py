"""The ASGI application: routes, error answers, and the life cycle of store, executor and job service."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nbrelay import __version__
from nbrelay.api import jobs as jobs_api
from nbrelay.api import notebooks as notebooks_api
from nbrelay.config import Settings
from nbrelay.errors import NbrelayError
from nbrelay.executor.local import LocalExecutor
from nbrelay.jobs import JobService
from nbrelay.store import open_store

log = logging.getLogger(__name__)


def seed_workspace(workspace: Path) -> bool:
    """Give a new, empty workspace the example notebooks, so a first start shows something real."""
    if workspace.exists() and any(workspace.iterdir()):
        return False
    source = resources.files("nbrelay") / "examples" / "workspace"
    with resources.as_file(source) as folder:
        shutil.copytree(folder, workspace, dirs_exist_ok=True)
    return True


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status)


async def _nbrelay_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NbrelayError)
    return JSONResponse(exc.to_dict(), status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    problems = [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
        for e in errors
    ]
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error(400, "invalid_json", "the request body is not valid JSON", problems=problems)
    first = problems[0] if problems else {"field": "", "problem": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return _error(422, "invalid_request", f"{where}{first['problem']}", problems=problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = {"error": {"code": code, "message": str(exc.detail)}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal_error", "something went wrong on the server; the log has the details")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.workspace.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.database_url)
        await store.start()
        service = JobService(settings, store, LocalExecutor(settings))
        app.state.jobs = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            await store.close()

    app = FastAPI(
        title="nbrelay",
        version=__version__,
        description="Run Jupyter notebooks as background jobs, with live push of every change.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_exception_handler(NbrelayError, _nbrelay_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(jobs_api.router)
    app.include_router(notebooks_api.router)

    @app.get("/api/health", tags=["service"], summary="Liveness and version")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app
