"""A real uvicorn serving nbrelay in a thread of the test process, on a free port.

In-process so a test can reach the app (publish into the hub, read the store) while clients talk to it over
real sockets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from nbrelay.app import create_app
from nbrelay.auth import hash_token, new_token
from nbrelay.config import Settings
from nbrelay.models import Event
from nbrelay.server import Server, server_config
from tests.conftest import free_port

T = TypeVar("T")


class LiveServer:
    def __init__(
        self, workspace: Path, data_dir: Path, *, port: int | None = None, plain_asgi: bool = False, **settings: Any
    ):
        self.port = port or free_port()
        # plain_asgi: uvicorn's own WebSocket protocol, as under any ASGI server (/ws is then the app's route)
        self.overrides: dict[str, Any] = {"ws": "websockets-sansio"} if plain_asgi else {}
        self.settings = Settings(
            workspace=workspace, data_dir=data_dir, port=self.port, workers=1, kernel_pool_size=0, **settings
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> LiveServer:
        self.app = create_app(self.settings)
        config = server_config(self.app, self.settings, lifespan="on", timeout_graceful_shutdown=3, **self.overrides)
        self.server = Server(config)
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            ready.set()
            self.loop.run_until_complete(self.server.serve())  # type: ignore[union-attr]
            self.loop.close()

        self.thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self.thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        """Run a coroutine on the server's loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def publish(self, stream: str, kind: str = "notice", **data: Any) -> Event:
        """`kind` with `data` on one stream, as the hub positioned it."""
        (event,) = self.call(self.app.state.push.hub.publish(Event(kind, data), [stream]))
        return event

    def stop(self) -> None:
        if self.server is not None and self.thread is not None and self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(30)


def make_token(server: LiveServer, name: str, *, admin: bool = False) -> str:
    """An API token for `name`, stored in the server's database as `nbrelay token create` does."""
    token = new_token()
    server.call(server.app.state.jobs.store.add_token(name, hash_token(token), admin=admin))
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
