"""The baseline: a python-socketio AsyncServer (async_mode="asgi", WebSocket transport only) on uvicorn with the
same uvicorn options as `nbrelay serve`, plus the same two benchmark-only routes:

    POST /bench/publish  {"to": "all" | "sids", "count": n, "size": bytes, "rate": per_s}
         "all": `await sio.emit("notice", payload)` to every client; "sids": `emit(..., to=sid)` round-robin
    GET  /bench/ping     {"ok": true}: how long a request waits
    GET  /bench/rusage   this process's CPU seconds, ru_maxrss, VmRSS and connected clients

    python bench/push/socketio_server.py --port P [--redis-url redis://… --channel NAME]

--redis-url: python-socketio's multi-node mode (AsyncRedisManager on that Redis, pub/sub channel NAME): every emit
is handed to this server's clients and published to the other servers through Redis.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared import HEARTBEAT_S, paced, payload, raise_fd_limit, rusage, uvicorn_options

try:
    import socketio
except ImportError:  # run.py checks first and explains; this is for a direct start
    sys.exit("bench/push/socketio_server.py needs python-socketio: uv pip install -p .venv python-socketio")


def build(heartbeat_s: float, redis_url: str = "", channel: str = "socketio") -> Any:
    manager = socketio.AsyncRedisManager(redis_url, channel=channel) if redis_url else None
    sio = socketio.AsyncServer(
        client_manager=manager,
        async_mode="asgi",
        transports=["websocket"],
        ping_interval=heartbeat_s,
        logger=False,
        engineio_logger=False,
    )
    sids: dict[str, None] = {}  # connected clients in connection order

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        sids[sid] = None

    @sio.event
    async def disconnect(sid: str, *reason: Any) -> None:
        sids.pop(sid, None)

    async def bench_publish(request: Request) -> JSONResponse:
        body = await request.json()
        size = int(body.get("size", 100))
        if body.get("to", "all") == "all":

            async def one(i: int, due: float) -> None:
                await sio.emit("notice", payload(size, i, due))

        else:
            targets = list(sids)
            if not targets:
                return JSONResponse({"published": 0, "elapsed_s": 0.0, "late": 0})

            async def one(i: int, due: float) -> None:
                await sio.emit("notice", payload(size, i, due), to=targets[i % len(targets)])

        return JSONResponse(await paced(int(body.get("count", 1)), float(body.get("rate", 0)), one))

    async def bench_ping(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def bench_rusage(request: Request) -> JSONResponse:
        return JSONResponse(rusage(len(sids)))

    routes = Starlette(
        routes=[
            Route("/bench/publish", bench_publish, methods=["POST"]),
            Route("/bench/ping", bench_ping, methods=["GET"]),
            Route("/bench/rusage", bench_rusage, methods=["GET"]),
        ]
    )
    return socketio.ASGIApp(sio, other_asgi_app=routes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--heartbeat-s", type=float, default=HEARTBEAT_S)
    parser.add_argument("--redis-url", default="", help="python-socketio's multi-node mode on this Redis")
    parser.add_argument("--channel", default="socketio", help="--redis-url: the pub/sub channel")
    args = parser.parse_args()
    raise_fd_limit(0)
    app = build(args.heartbeat_s, args.redis_url, args.channel)
    uvicorn.run(app, **uvicorn_options(args.port, args.heartbeat_s))


if __name__ == "__main__":
    main()
