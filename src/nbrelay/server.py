"""Serving the app with uvicorn: the options the design chose, and a clean goodbye to push clients."""

from __future__ import annotations

import signal
from functools import partial
from typing import Any

import uvicorn
from fastapi import FastAPI

from nbrelay.config import Settings
from nbrelay.push.transports.ws_direct import PushWebSocketProtocol


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


def _exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # the stop that was asked for went well (systemd counts a death by SIGTERM clean, too)


class Server(uvicorn.Server):
    """uvicorn closes WebSockets with 1012 before the app hears of the shutdown; close ours first with 4001
    (server restarting: reconnect and resume), as the protocol says."""

    def run(self, sockets: Any = None) -> None:
        # After a graceful shutdown uvicorn raises the signal that asked for it again, to end as if it had not been
        # handled: SIGTERM's death skips the exit handlers (multiprocessing's, which remove the worker queues'
        # semaphores: "leaked semaphore objects" at every stop), Ctrl+C's KeyboardInterrupt ends the command as
        # "Aborted!" with status 1. Either ends as an exit with status 0 instead, after the exit handlers.
        stops = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, _exit) for sig in stops}
        try:
            super().run(sockets)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: Any = None) -> None:
        # No new connections first (uvicorn's own shutdown does it too, but only after our goodbye): a client
        # told 4001 comes straight back, and would otherwise get a new session that uvicorn then waits for until
        # its graceful timeout and cancels ("Cancel N running task(s)", a stop of 10 s instead of a moment).
        for server in self.servers:
            server.close()
        push = getattr(getattr(self.config.app, "state", None), "push", None)
        if push is not None:
            await push.close_all()
        await super().shutdown(sockets)
