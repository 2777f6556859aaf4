"""The ASGI application: routes, error answers, and the life cycle of store, executor and job service."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from nbrelay import __version__
from nbrelay.api import auth as auth_api
from nbrelay.api import contents as contents_api
from nbrelay.api import jobs as jobs_api
from nbrelay.api import notebooks as notebooks_api
from nbrelay.api import page as page_api
from nbrelay.api import reports as reports_api
from nbrelay.api.auth import CurrentUser
from nbrelay.auth import Authenticator, request_origin_allowed
from nbrelay.config import Settings
from nbrelay.contents import Contents
from nbrelay.errors import NbrelayError
from nbrelay.executor.local import LocalExecutor
from nbrelay.hub import open_hub
from nbrelay.jobs import JobService
from nbrelay.metrics import Metrics
from nbrelay.push import Push
from nbrelay.reports import ReportHistory
from nbrelay.store import open_store
from nbrelay.transports.legacy import serve_legacy, unfinished_envelope
from nbrelay.transports.sockjs import mount_sockjs
from nbrelay.transports.sse import serve_sse
from nbrelay.transports.ws import serve_websocket

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


class OriginGuard:
    """Refuse writes (POST, PUT, PATCH, DELETE) sent by a browser page of a foreign origin: cookies ride along
    with such requests, so without this any site could act as the logged-in user."""

    SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in self.SAFE:
            headers = Headers(scope=scope)
            peer = scope["client"][0] if scope.get("client") else None
            if not request_origin_allowed(headers, peer, self.settings):
                response = _error(403, "origin_refused", f"requests from {headers.get('origin')} are not allowed")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.workspace.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.database_url)
        await store.start()
        service = JobService(settings, store, LocalExecutor(settings))
        auth = Authenticator(settings, store)
        hub = open_hub(
            settings.broker_url,
            history_size=settings.history_size,
            history_ttl_s=settings.history_ttl_s,
            subscriber_queue_size=settings.subscriber_queue_size,
            engine=getattr(store, "engine", None),
        )
        push = Push(settings, hub, service, auth, metrics)
        app.state.jobs, app.state.auth, app.state.push = service, auth, push
        app.state.contents = Contents(settings, announce=push.file_changed)
        app.state.reports = reports = ReportHistory(
            store=store,
            reports_dir=settings.reports_dir,
            keep_last=settings.report_keep_last,
            keep_days=settings.report_keep_days,
        )
        await push.start()  # before the service starts: recovery events must reach the hub too
        await service.start()
        retention = asyncio.create_task(reports.run_forever(settings.retention_interval_s), name="retention")
        try:
            yield
        finally:
            retention.cancel()
            await asyncio.gather(retention, return_exceptions=True)
            await push.stop()
            await service.stop()
            await store.close()

    app = FastAPI(
        title="nbrelay",
        version=__version__,
        description="Run Jupyter notebooks as background jobs, with live push of every change.",
        lifespan=lifespan,
    )
    metrics = Metrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(OriginGuard, settings=settings)
    app.add_exception_handler(NbrelayError, _nbrelay_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.include_router(auth_api.router)
    app.include_router(jobs_api.router)
    app.include_router(notebooks_api.router)
    app.include_router(contents_api.router)
    app.include_router(reports_api.router)
    app.include_router(page_api.router)

    @app.websocket("/ws")
    async def websocket_endpoint(websocket: WebSocket) -> None:
        await serve_websocket(websocket, app.state.push)

    @app.websocket(settings.legacy_ws_path)
    async def legacy_websocket(websocket: WebSocket) -> None:
        await serve_legacy(websocket, app.state.push)

    @app.get(
        settings.legacy_unfinished_path, tags=["push"], summary="Unfinished jobs in the legacy envelope (msgType 1)"
    )
    async def legacy_unfinished(user: CurrentUser) -> Response:
        jobs = await app.state.push.snapshot(user)
        return Response(unfinished_envelope(jobs), media_type="application/json")

    @app.get("/sse", tags=["push"], summary="Server-sent events of the user's streams (?streams=a,b)")
    async def sse_endpoint(request: Request) -> Response:
        return await serve_sse(request, app.state.push)

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        if hasattr(app.state, "push"):
            app.state.push.report()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    mount_sockjs(app, settings)
    app.mount("/static", StaticFiles(packages=[("nbrelay", "web")]), name="static")

    @app.get("/api/health", tags=["service"], summary="Liveness and version")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    return app
