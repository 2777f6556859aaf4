"""The ASGI application: routes, error answers, and the life cycle of store, executor and job service."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from nbrelay import __version__
from nbrelay.api import auth as auth_api
from nbrelay.api import contents as contents_api
from nbrelay.api import docs as docs_api
from nbrelay.api import jobs as jobs_api
from nbrelay.api import notebooks as notebooks_api
from nbrelay.api import notifications as notifications_api
from nbrelay.api import page as page_api
from nbrelay.api import reports as reports_api
from nbrelay.api import schedules as schedules_api
from nbrelay.api.auth import CurrentUser, current_user
from nbrelay.api.guards import BodyLimit, LastResort, PathText, SecurityHeaders
from nbrelay.api.head import HeadAsGet
from nbrelay.api.openapi import document_common_errors, error_responses
from nbrelay.auth import Authenticator, request_origin_allowed
from nbrelay.config import Settings
from nbrelay.contents import Contents
from nbrelay.errors import Forbidden, InvalidJson, NbrelayError, is_outage, reason_of
from nbrelay.files import sweep_leftovers
from nbrelay.hub import open_hub
from nbrelay.jobs import open_job_service
from nbrelay.metrics import Metrics
from nbrelay.notify.delivery import open_delivery
from nbrelay.push import Push
from nbrelay.push.transports.legacy import serve_legacy, unfinished_envelope
from nbrelay.push.transports.sockjs import mount_sockjs
from nbrelay.push.transports.sse import serve_sse
from nbrelay.push.transports.ws import serve_websocket
from nbrelay.readiness import RETRY_AFTER_S, Readiness
from nbrelay.reports import ReportHistory
from nbrelay.schedules import open_scheduling
from nbrelay.store import open_store

log = logging.getLogger(__name__)


def seed_workspace(workspace: Path, into: str = "") -> bool:
    """Give a new, empty workspace the example notebooks, so a first start shows something real: in its folder
    `into` (the shared folder when users have folders of their own: found from outside, examples at the top were
    seen by admins only, and "run tour.ipynb" led users nowhere)."""
    if workspace.exists() and any(workspace.iterdir()):
        return False
    source = resources.files("nbrelay") / "examples" / "workspace"
    with resources.as_file(source) as folder:
        shutil.copytree(folder, workspace / into, dirs_exist_ok=True)
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
    invalid = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if invalid is not None:
        return _invalid_json(exc.body, invalid)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if any(e.get("loc", ())[:1] == ("body",) for e in errors) and not _is_json_type(kind):
        # FastAPI reads a body as JSON only when it says it is JSON: what arrived otherwise is no JSON at all.
        return _error(
            415,
            "unsupported_media_type",
            f"this route reads application/json; the request has {repr(kind) if kind else 'no Content-Type'}",
            hint="send the body as JSON with 'Content-Type: application/json'",
        )
    first = problems[0] if problems else {"field": "", "problem": "invalid request"}
    where = f"{first['field']}: " if first["field"] else ""
    return _error(422, "invalid_request", f"{where}{first['problem']}", problems=problems)


def _is_json_type(kind: str) -> bool:
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _invalid_json(document: Any, error: dict[str, Any]) -> JSONResponse:
    position = error.get("loc", ("body", 0))[-1]
    reason = error.get("ctx", {}).get("error") or "not JSON"
    exc = InvalidJson(
        reason, document if isinstance(document, str) else "", position if isinstance(position, int) else 0
    )
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def _allowed_methods(request: Request) -> str:
    """The methods this path really has, over all its routes (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):  # included routers' routes too
        if route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")  # every GET answers HEAD too (api/head.py)
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, headers = exc.status_code, dict(exc.headers or {})
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 429: "too_many_failures"}.get(
        status, "http_error"
    )
    message = str(exc.detail)
    if status == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
        message = f"{request.method} is not allowed here; this path takes {allowed}"
    if status == 400 and isinstance(exc.__cause__, (RecursionError, UnicodeDecodeError)):
        # FastAPI's body reading turns these into "There was an error parsing the body".
        code = "invalid_json"
        message = (
            "the request body is nested too deeply to read"
            if isinstance(exc.__cause__, RecursionError)
            else "the request body is not UTF-8 text"
        )
    elif status == 400:
        code = "bad_request"
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, "internal_error", "something went wrong on the server; the log has the details")


async def _store_or_disk_error(request: Request, exc: Exception) -> JSONResponse:
    """A database or disk that refuses for now is said as such: 507 when full, else 503 with Retry-After (found
    from outside: a full disk and a locked database were 500 internal_error, and ~100 lines of log each)."""
    if request.scope["type"] != "http":
        raise exc  # a WebSocket's: its transport closes it as it closes any failure
    if not is_outage(exc):
        return await _unexpected_error(request, exc)
    reason = reason_of(exc)
    log.warning("%s %s: %s", request.method, request.url.path, reason)
    if getattr(exc, "errno", None) == errno.ENOSPC or "disk is full" in reason or "No space left" in reason:
        return _error(507, "disk_full", f"the server's disk is full: {reason}")
    response = _error(503, "unavailable", f"the server cannot do this now ({reason}); try again shortly")
    response.headers["Retry-After"] = "5"
    return response


class EventStream(Response):
    media_type = "text/event-stream"  # what /sse answers (its OpenAPI entry)


SSE_ERRORS = error_responses(400, 401, 403, 503)
# One event of /sse as the document describes it: its `data` is a JSON text (docs/protocol.md).
SSE_EVENTS = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
        }
    }
}


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


async def _sweep_forever(settings: Settings) -> None:
    """Remove what uploads and writes cut off by a crash left in the workspace (files.sweep_leftovers), at start
    and then hourly. On SQLite this server is the only one writing there, so at start every one is left over
    (but one an upload made in the first seconds); where several nodes share the workspace, one untouched for an
    hour is (a live upload writes to its file all along)."""
    alone = settings.database_url.startswith("sqlite")
    older_than_s = 10.0 if alone else 3600.0
    while True:
        try:
            await asyncio.to_thread(sweep_leftovers, settings.workspace, older_than_s=older_than_s)
        except Exception:
            log.exception("the sweep of left-over temporary files failed; trying again in an hour")
        older_than_s = 3600.0
        await asyncio.sleep(3600)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.workspace.mkdir(parents=True, exist_ok=True)
        if settings.multi_node and not settings.secret_key:
            log.warning(
                "NBRELAY_SECRET_KEY is not set: this node signs session cookies with a key of its own "
                "(%s). With several web nodes every node needs the same key, or a sign-in on one node is "
                "refused by the others: set NBRELAY_SECRET_KEY on all of them (docs/deploy.md).",
                settings.data_dir / "secret_key",
            )
        store = open_store(settings.database_url)
        await store.start()
        service = open_job_service(settings, store)
        auth = Authenticator(settings, store)
        hub = open_hub(
            settings.broker_url,
            database_url=settings.database_url,
            history_size=settings.history_size,
            history_ttl_s=settings.history_ttl_s,
            subscriber_queue_size=settings.subscriber_queue_size,
        )
        push = Push(settings, hub, service, auth, metrics)
        app.state.jobs, app.state.auth, app.state.push = service, auth, push
        app.state.contents = Contents(settings, announce=push.file_changed)
        service.recorder.announce_file = push.file_changed  # what post-run steps change, told as any change
        app.state.reports = reports = ReportHistory(
            store=store,
            reports_dir=settings.reports_dir,
            keep_last=settings.report_keep_last,
            keep_days=settings.report_keep_days,
        )
        # Webhooks and e-mail: every web node sends from the outbox the store fills with each job's end.
        app.state.notifications, app.state.delivery = open_delivery(settings, store, hub, service.recorder, metrics)
        app.state.schedules, scheduler = open_scheduling(service, announce=push.on_schedule_event)
        readiness = Readiness({"database": store.ping, "hub": hub.ping, "executor": service.executor.ping})
        await push.start()  # before the service starts: recovery events must reach the hub too
        await service.start()
        scheduler.start()  # on every web node: the store decides which node runs a tick
        await app.state.delivery.start()
        retention = asyncio.create_task(reports.run_forever(settings.retention_interval_s), name="retention")
        app.state.readiness = readiness  # from here on /api/ready asks; before, it says the node is starting
        sweep = asyncio.create_task(_sweep_forever(settings), name="sweep")
        try:
            yield
        finally:
            app.state.readiness = None  # stopping: a load balancer should send no more work here
            readiness.close()
            await scheduler.stop()
            retention.cancel()
            sweep.cancel()
            await asyncio.gather(retention, sweep, return_exceptions=True)
            await app.state.delivery.stop()
            # The service first: the jobs it ends ("interrupted: server stopped") are published while the hub
            # still takes events, so a client resuming after the restart hears of them.
            await service.stop()
            await push.stop()
            await store.close()

    app = FastAPI(
        title="nbrelay",
        version=__version__,
        description="Run Jupyter notebooks as background jobs, with live push of every change.",
        lifespan=lifespan,
        docs_url=None,  # served by api/docs.py, with their assets from here rather than a CDN
        redoc_url=None,
    )
    metrics = Metrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(LastResort, answer=_unexpected_error)  # innermost
    app.add_middleware(OriginGuard, settings=settings)
    app.add_middleware(BodyLimit, limit_bytes=settings.max_body_bytes)
    app.add_middleware(PathText)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HeadAsGet)  # outermost: everything inside answers the GET a HEAD runs as
    app.add_exception_handler(NbrelayError, _nbrelay_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)  # what LastResort cannot take (a middleware's error)
    for refusal in (OSError, sqlite3.Error, DBAPIError):  # answered without a 500 where they are outages
        app.add_exception_handler(refusal, _store_or_disk_error)
    app.include_router(auth_api.router)
    app.include_router(jobs_api.router)
    app.include_router(notebooks_api.router)
    app.include_router(contents_api.router)
    app.include_router(reports_api.router)
    app.include_router(schedules_api.router)
    app.include_router(notifications_api.router)
    app.include_router(page_api.router)
    app.include_router(docs_api.router)

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

    @app.get(
        "/sse",
        tags=["push"],
        summary="Server-sent events of the user's streams (?streams=a,b)",
        response_class=EventStream,
        responses={200: {"description": "the event stream (docs/protocol.md)", "content": SSE_EVENTS}, **SSE_ERRORS},
    )
    async def sse_endpoint(request: Request) -> Response:
        return await serve_sse(request, app.state.push)

    # How the service runs inside (metrics, why it is not ready) is for everyone where NBRELAY_METRICS_PUBLIC says
    # so (by default without sign-in), else for admins.
    inside_public = settings.metrics_public if settings.metrics_public is not None else settings.auth_mode == "none"

    async def for_operators(request: Request) -> bool:
        if inside_public:
            return True
        try:
            return (await current_user(request)).admin
        except NbrelayError:  # not signed in
            return False

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        # Who runs what, how many users are connected: not for everyone who can reach the port.
        if not inside_public and not (await current_user(request)).admin:  # 401 for who is not signed in
            raise Forbidden("metrics are for admins (or set NBRELAY_METRICS_PUBLIC=true)", code="admin_only")
        if hasattr(app.state, "push"):
            app.state.push.report()
            await app.state.jobs.figures(metrics.job_figures)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    mount_sockjs(app, settings)
    app.mount("/static", StaticFiles(packages=[("nbrelay", "web")]), name="static")

    @app.get("/api/health", tags=["service"], summary="Liveness and version")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/api/ready",
        tags=["service"],
        summary="Readiness: the job database, the hub and the executor answer",
        description="200 when this node can take work now; 503 with Retry-After when something it needs does not "
        "answer (or while it starts or stops). Each check says ok and how long it took; why one failed is said to "
        "admins, or to everyone where metrics are public. /api/health only says the process is alive.",
        responses={503: {"description": "not ready: a check failed, or the node starts or stops"}},
    )
    async def ready(request: Request) -> JSONResponse:
        readiness: Readiness | None = getattr(app.state, "readiness", None)
        if readiness is None:
            body = {"status": "not_ready", "version": __version__, "reason": "starting or stopping", "checks": {}}
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        checks = await readiness.check()
        why = await for_operators(request)
        ok = all(check.ok for check in checks)
        body = {
            "status": "ready" if ok else "not_ready",
            "version": __version__,
            "checks": {check.name: check.shown(why=why) for check in checks},
        }
        headers = {} if ok else {"Retry-After": str(RETRY_AFTER_S)}
        return JSONResponse(body, status_code=200 if ok else 503, headers=headers)

    document_common_errors(app, signed_in=current_user)
    return app
