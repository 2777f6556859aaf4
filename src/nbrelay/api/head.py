"""HEAD on every GET route: the request runs as a GET and its answer goes out without the body.

FastAPI routes only the methods a route names, so a HEAD was 405 everywhere: load balancers that health-check
with HEAD marked every node down, and `curl -I` of a page or a file failed. A HEAD must answer what a GET would,
minus the content (RFC 9110, 9.3.2): running the GET itself gives the same status and headers (Content-Type,
Content-Length, the security headers) by construction, where a second route per path could drift from its GET.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class HeadAsGet:
    """Answer a HEAD by running the GET of its path: the status and headers pass, the body is dropped.

    The answer ends at the GET's first body message. The server then tells the GET that the client has gone
    (ASGI: `http.disconnect` once the response is sent), as when a browser closes a stream: an endless response
    (/sse) stops there and cleans up after itself, rather than holding the HEAD open. Only HTTP is touched: a
    WebSocket handshake (/ws) is no HEAD."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def send_headers_only(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                await send(message)
            elif not answered:  # the first of the body (or of a file sent by path): the end, empty
                answered = True
                await send(_END)
            # anything after the end is body a HEAD does not carry

        # The server keeps its own scope, method HEAD: it sends no body either, and logs the HEAD.
        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
