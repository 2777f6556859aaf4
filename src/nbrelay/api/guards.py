"""What every HTTP request and answer passes besides its route: a path that is text (400 before any route reads
it), a cap on request bodies (413 before the route reads too much), and the security headers every answer
carries unless its route set its own; and the last resort for a bug, answered 500 and logged once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import unquote_to_bytes

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nbrelay.errors import PathRefused, PayloadTooLarge

# An API answer is data: never rendered as a document, never framed.
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def capped(receive: Receive, limit: int, too_large: Callable[[], Exception]) -> Receive:
    """A receive channel that raises `too_large()` once more than `limit` bytes of body came through it."""
    seen = 0

    async def receive_capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large()
        return message

    return receive_capped


def is_upload(scope: Scope) -> bool:
    """Uploads to the workspace: contents.py caps them at NBRELAY_MAX_UPLOAD_BYTES itself."""
    return scope["method"] == "PUT" and scope["path"].startswith("/api/contents/")


def path_problem(raw_path: bytes) -> str | None:
    """What makes a request's path no text, if anything: escaped bytes that are not UTF-8 (the server would read
    them as U+FFFD, and %FF and %FE would name one file), or a control character (no route's pattern matches a
    newline: such a path was a 404 that said nothing)."""
    decoded = unquote_to_bytes(raw_path)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return f"the path {raw_path.decode('ascii', 'replace')!r} escapes bytes that are not UTF-8 text"
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        return "control characters are not allowed in paths"
    return None


# The routes whose path names a file of the workspace (their 400 path_refused is documented).
WORKSPACE_ROUTES = ("/api/contents/", "/files/", "/api/notebooks/")


class PathText:
    """Refuse (400 path_refused) a request to a route that names a workspace file by a path that is not text
    (path_problem); looked at only when the path escapes something."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") or b""
        if (
            scope["type"] == "http"
            and b"%" in raw
            and scope["path"].startswith(WORKSPACE_ROUTES)
            and (problem := path_problem(raw)) is not None
        ):
            error = PathRefused(problem)
            await JSONResponse(error.to_dict(), status_code=error.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse a request body over `limit_bytes` with 413: at once when its Content-Length says so, else when
    the bytes that arrived pass the limit (the route never sees more)."""

    def __init__(self, app: ASGIApp, limit_bytes: int, exempt: Callable[[Scope], bool] = is_upload):
        self.app = app
        self.limit_bytes = limit_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limit_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            error = PayloadTooLarge(
                f"the request body is {declared} bytes; the limit is {limit}", hint="NBRELAY_MAX_BODY_BYTES sets it"
            )
            await JSONResponse(error.to_dict(), status_code=413)(scope, receive, send)
            return
        # An HTTPException, so that FastAPI's body reading passes it on as it is (app._http_error).
        too_large = HTTPException(413, f"the request body is over the limit of {limit} bytes")
        await self.app(scope, capped(receive, limit, lambda: too_large), send)


class SecurityHeaders:
    """nosniff and a referrer policy on every answer; JSON answers also get a CSP that forbids rendering and
    framing them. Headers a route set itself (the page's CSP, the reports' sandbox) are kept as they are."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
                if headers.get("content-type", "").startswith("application/json"):
                    headers.setdefault("Content-Security-Policy", API_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class LastResort:
    """An error that no handler took (a bug): answered by `answer` (500 internal_error, logged once with the
    request), and not raised again. Starlette's handler for Exception answers and then raises the error again for
    the server, which logged its traceback a second time. Innermost of the middlewares, so that the answer still
    passes the others (security headers); an error after the answer began is left to the server as it was."""

    def __init__(self, app: ASGIApp, answer: Callable[[Request, Exception], Awaitable[Response]]):
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = False

        async def send_noting(message: Message) -> None:
            nonlocal began
            began = began or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_noting)
        except Exception as exc:
            if began:
                raise
            response = await self.answer(Request(scope), exc)
            await response(scope, receive, send)
