"""Serving the app with uvicorn: the options the design chose, and a clean goodbye to push clients."""

from __future__ import annotations

from functools import partial
from typing import Any

import uvicorn
from fastapi import FastAPI

from nbrelay.config import Settings
from nbrelay.transports.ws_direct import PushWebSocketProtocol


def server_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """websockets-sansio, uvloop and httptools; per-message deflate off (it costs 30-40 % throughput); protocol
    pings every heartbeat_s, under the 60 s idle cut of nginx's default proxy_read_timeout."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.heartbeat_s,
        "ws_ping_timeout": settings.heartbeat_s,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "timeout_graceful_shutdown": 10,
        # The service reads X-Forwarded-* itself, from settings.trusted_proxies only (nbrelay.forwarded); uvicorn's
        # own rewrite would put a forwarded address where header auth must see the TCP peer.
        "proxy_headers": False,
        **overrides,
    }
    # /ws is served by the WebSocket protocol itself (transports/ws_direct.py): no ASGI layer per connection
    options.setdefault("ws", partial(PushWebSocketProtocol, push_app=app))
    return uvicorn.Config(app, **options)


class Server(uvicorn.Server):
    """uvicorn closes WebSockets with 1012 before the app hears of the shutdown; close ours first with 4001
    (server restarting: reconnect and resume), as the protocol says."""

    async def shutdown(self, sockets: Any = None) -> None:
        push = getattr(getattr(self.config.app, "state", None), "push", None)
        if push is not None:
            await push.close_all()
        await super().shutdown(sockets)
