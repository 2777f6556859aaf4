"""The SockJS server for one base URL, as a pure ASGI app mounted there: the URL scheme of protocol 0.3.3 (greeting,
/info, the iframe page, raw and framed WebSocket, the HTTP transports) around one application protocol.

The application protocol is a `serve(websocket, push)` function written for a real WebSocket (`serve_legacy`,
`serve_websocket`): over WebSocket it gets the socket itself; over the HTTP transports, a SockJS session that
behaves as one. So origin checks, auth, admission and hub subscriptions are the same code for every transport.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from nbrelay.config import Settings
from nbrelay.push.transports.port import PushPort
from nbrelay.push.transports.sockjs import headers
from nbrelay.push.transports.sockjs.frames import (
    ANOTHER_CONNECTION,
    RECEIVERS,
    HttpTransport,
    ProtocolError,
    check_callback,
    close_frame,
    decode_messages,
    jsonp_payload,
)
from nbrelay.push.transports.sockjs.iframe import IframePage
from nbrelay.push.transports.sockjs.receivers import receive_over_http, receive_over_websocket
from nbrelay.push.transports.sockjs.session import SessionTable, SockJSSession, websocket_scope
from nbrelay.push.transports.ws import origin_refused, websocket_user

Serve = Callable[[WebSocket, PushPort], Awaitable[None]]

SESSION_PATH = re.compile(r"^/([^/.]+)/([^/.]+)/([a-z_]+)$")  # /<server>/<session>/<transport>
IFRAME_PATH = re.compile(r"^/iframe[0-9a-z_.-]*\.html$")
MAX_SEND_BYTES = 256 * 1024
_SENDERS = {"xhr_send", "jsonp_send"}
_METHODS = {
    "xhr": "POST",
    "xhr_streaming": "POST",
    "xhr_send": "POST",
    "jsonp_send": "POST",
    "eventsource": "GET",
    "htmlfile": "GET",
    "jsonp": "GET",
    "websocket": "GET",
}
_PREFLIGHT = {"xhr", "xhr_streaming", "xhr_send"}
_TEXT = "text/plain; charset=UTF-8"


def _route_path(scope: Scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _error(status: int, text: str, extra: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text, status_code=status, headers=extra, media_type=_TEXT)


async def _body(request: Request) -> bytes | None:
    """The request body, or None past MAX_SEND_BYTES."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SEND_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class SockJSEndpoint:
    def __init__(self, serve: Serve, settings: Settings):
        self.serve = serve
        self.settings = settings
        self.sessions = SessionTable(settings.sockjs_disconnect_delay_s)
        self.iframe = IframePage(settings.sockjs_client_url) if settings.sockjs_client_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        push: PushPort = scope["app"].state.push
        path = _route_path(scope)
        if scope["type"] == "websocket":
            await self._websocket(WebSocket(scope, receive, send), path, push)
        elif scope["type"] == "http":
            request = Request(scope, receive)
            answer = await self._http(request, path, push)
            await answer(scope, receive, send)

    def _start_session(self, scope: Scope, push: PushPort) -> SockJSSession:
        session = SockJSSession(scope)
        session.start(lambda websocket: self.serve(websocket, push))
        return session

    # WebSocket ---------------------------------------------------------------------------------------------------
    async def _websocket(self, websocket: WebSocket, path: str, push: PushPort) -> None:
        if path == "/websocket":
            await self.serve(websocket, push)  # raw WebSocket: no SockJS framing, the application protocol as is
            return
        match = SESSION_PATH.match(path)
        if match is None or match.group(3) != "websocket" or origin_refused(websocket, push):
            await websocket.close(1008)  # before accept: HTTP 403
            return
        # One session per socket, kept nowhere else: WebSocket sessions may share an id, and end with their socket.
        session = self._start_session(websocket.scope, push)
        await receive_over_websocket(websocket, session, self.settings.heartbeat_s)

    # HTTP --------------------------------------------------------------------------------------------------------
    async def _http(self, request: Request, path: str, push: PushPort) -> ASGIApp:
        """The answer to a request: a response, or for a receiving transport the frames of its session."""
        if path in ("", "/"):
            return PlainTextResponse("Welcome to SockJS!\n", media_type=_TEXT)
        if origin_refused(_handshake(request.scope), push):
            return _error(403, f"requests from {request.headers.get('origin')} are not allowed")
        if path == "/info":
            return self._info(request)
        if IFRAME_PATH.match(path):
            return self._iframe(request)
        match = SESSION_PATH.match(path)
        kind = "websocket" if path == "/websocket" else match.group(3) if match else None
        if kind not in _METHODS:
            return _error(404, "Not found")
        if request.method == "OPTIONS" and kind in _PREFLIGHT:
            return Response(status_code=204, headers=headers.preflight(request.headers, "OPTIONS, POST"))
        if request.method != _METHODS[kind]:
            return Response(status_code=405, headers={"Allow": _METHODS[kind]})
        if kind == "websocket":
            return _websocket_over_http(request)
        assert match is not None
        if kind in _SENDERS:
            return await self._send(request, match.group(2), kind, push)
        return await self._receive(request, match.group(2), RECEIVERS[kind], push)

    def _info(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=headers.preflight(request.headers, "OPTIONS, GET"))
        if request.method != "GET":
            return Response(status_code=405, headers={"Allow": "OPTIONS, GET"})
        info = {
            "websocket": True,
            "origins": ["*:*"],
            "cookie_needed": self.settings.sockjs_cookie_needed,
            "entropy": secrets.randbits(32),
        }
        extra = {**headers.NO_CACHE, **headers.cors(request.headers)}
        return JSONResponse(info, headers=extra, media_type="application/json; charset=UTF-8")

    def _iframe(self, request: Request) -> Response:
        if request.method != "GET":
            return Response(status_code=405, headers={"Allow": "GET"})
        if self.iframe is None:
            return _error(404, "no iframe page: NBRELAY_SOCKJS_CLIENT_URL is not set")
        return self.iframe.response(request.headers)

    def _session_headers(self, request: Request) -> dict[str, str]:
        extra = {**headers.NO_CACHE, **headers.cors(request.headers)}
        if self.settings.sockjs_cookie_needed:
            extra.update(headers.jsessionid(request.cookies.get("JSESSIONID")))
        return extra

    async def _send(self, request: Request, session_id: str, kind: str, push: PushPort) -> Response:
        """xhr_send, jsonp_send: client messages into an existing session."""
        session = self.sessions.get(session_id)
        if session is None or await _user_name(request.scope, push) != session.owner:
            return _error(404, "Not found")
        try:
            body = await _body(request)
        except ClientDisconnect:  # the client went before its body was whole: nothing to deliver, nobody to answer
            return Response(status_code=400)
        if body is None:
            return _error(413, f"Payload over {MAX_SEND_BYTES} bytes.")
        extra = self._session_headers(request)
        try:
            if kind == "jsonp_send":
                texts = decode_messages(jsonp_payload(body, request.headers.get("content-type", "")))
            else:
                texts = decode_messages(body.decode("utf-8", errors="replace"))
        except ProtocolError as error:
            return _error(500, str(error), extra)
        await session.deliver(texts)
        if kind == "jsonp_send":
            return PlainTextResponse("ok", headers=extra, media_type=_TEXT)
        return Response(status_code=204, headers=extra, media_type=_TEXT)

    async def _receive(self, request: Request, session_id: str, transport: HttpTransport, push: PushPort) -> ASGIApp:
        """A receiving request: opens the session when it is new, then carries its frames."""
        callback = ""
        if transport.needs_callback:
            try:
                callback = check_callback(request.query_params.get("c"))
            except ProtocolError as error:
                return _error(500, str(error))
        owner = await _user_name(request.scope, push)
        session = self.sessions.get(session_id)
        if session is None:
            session = self._start_session(request.scope, push)
            session.owner = owner
            self.sessions.add(session_id, session)
        elif owner != session.owner:
            return _error(404, "Not found")
        extra = self._session_headers(request)
        if transport.policy:
            extra["Content-Security-Policy"] = transport.policy
        if not self.sessions.attach(session_id, session):
            body = transport.prelude(callback) + transport.wrap(close_frame(*ANOTHER_CONNECTION), callback)
            return Response(body, headers=extra, media_type=transport.content_type)

        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.sessions.detach(session_id, session)

        async def carry(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                if not await session.wait_open():
                    self.sessions.remove(session_id)
                    await _error(403, "the server refused the session")(scope, receive, send)
                    return
                await send(_response_start(transport.content_type, extra))
                await receive_over_http(
                    session,
                    transport,
                    callback,
                    receive,
                    send,
                    release,
                    limit_bytes=self.settings.sockjs_response_limit_bytes,
                    heartbeat_s=self.settings.heartbeat_s,
                )
            finally:
                release()

        return carry


def _websocket_over_http(request: Request) -> Response:
    if request.headers.get("upgrade", "").lower() != "websocket":
        return _error(400, 'Can "Upgrade" only to "WebSocket".')
    return _error(400, '"Connection" must be "Upgrade".')


def _response_start(content_type: str, extra: dict[str, str]) -> Message:
    pairs = [("content-type", content_type), *((name.lower(), value) for name, value in extra.items())]
    return {"type": "http.response.start", "status": 200, "headers": [(k.encode(), v.encode()) for k, v in pairs]}


def _handshake(scope: Scope) -> WebSocket:
    """A request seen as a WebSocket handshake, for the checks /websocket makes (origin, user): same headers,
    cookies, query and client."""
    return WebSocket(websocket_scope(scope), _unused_receive, _unused_send)


async def _user_name(scope: Scope, push: PushPort) -> str | None:
    user = await websocket_user(_handshake(scope), push)
    return user.name if user else None


async def _unused_receive() -> Message:
    raise RuntimeError("only the handshake of this WebSocket is read")


async def _unused_send(message: Message) -> None:
    raise RuntimeError("only the handshake of this WebSocket is read")
