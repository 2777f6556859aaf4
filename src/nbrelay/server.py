"""Serving the app with uvicorn: the options the design chose, and a clean goodbye to push clients."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from nbrelay.config import Settings
from nbrelay.transports.ws import serve_websocket


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """websockets-sansio, uvloop and httptools; per-message deflate off (it costs 30-40 % throughput); protocol
    pings every heartbeat_s, under the 60 s idle cut of nginx's default proxy_read_timeout."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.heartbeat_s,
        "ws_ping_timeout": settings.heartbeat_s,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "timeout_graceful_shutdown": 10,
        **overrides,
    }
    return uvicorn.Config(PushFastPath(app), **options)


class PushFastPath:
    """Sends `/ws` straight to the push transport. A WebSocket lives for hours, and every ASGI layer it passes
    through keeps a coroutine frame alive for it: FastAPI's stack costs ~10 KiB per idle connection (measured,
    docs/benchmarks.md). Everything else goes to the app; attributes (`state`) are the app's."""

    def __init__(self, app: FastAPI):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            path, root = scope["path"], scope.get("root_path", "")
            if (path[len(root) :] if root and path.startswith(root) else path) == "/ws":
                await serve_websocket(WebSocket(scope, receive, send), self.app.state.push)
                return
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


class Server(uvicorn.Server):
    """uvicorn closes WebSockets with 1012 before the app hears of the shutdown; close ours first with 4001
    (server restarting: reconnect and resume), as the protocol says."""

    async def shutdown(self, sockets: Any = None) -> None:
        push = getattr(getattr(self.config.app, "state", None), "push", None)  # through PushFastPath
        if push is not None:
            await push.close_all()
        await super().shutdown(sockets)
