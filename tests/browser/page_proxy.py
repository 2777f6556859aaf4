"""A small reverse proxy for the tests, shaped like nginx's `location /sub { proxy_pass http://backend/; }`: it
publishes a server under a path prefix, strips the prefix, keeps the Host header, and carries WebSocket upgrades
(bytes both ways). Anything outside the prefix gets the proxy's own 404, and every request target is recorded.

Runs its own event loop in a thread. One request per connection (it asks the backend to close after each
answer), which keeps it small: it never has to parse a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.conftest import free_port

NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: 22\r\nconnection: close\r\n\r\n"
    b"not under the prefix\r\n"
)
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection"}


class PrefixProxy:
    def __init__(self, prefix: str, backend_port: int):
        self.prefix = prefix.rstrip("/")
        self.backend_port = backend_port
        self.port = free_port()
        self.targets: list[str] = []  # request targets as the browser sent them
        self.refused: list[str] = []  # those outside the prefix
        self.upgrades: list[str] = []  # WebSocket upgrades passed on
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="prefix-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> PrefixProxy:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        return self

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in others:  # connections still open (the page's WebSocket, say)
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _backend_target(self, target: str) -> str | None:
        if target == self.prefix or target.startswith((f"{self.prefix}?", f"{self.prefix}#")):
            return "/" + target[len(self.prefix) :]
        if target.startswith(f"{self.prefix}/"):
            return target[len(self.prefix) :]
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        self.targets.append(target)
        backend_target = self._backend_target(target)
        if backend_target is None:
            self.refused.append(target)
            writer.write(NOT_FOUND)
            await writer.drain()
            writer.close()
            return
        headers = [line for line in header_lines if line.split(":", 1)[0].strip().lower() not in HOP_BY_HOP]
        upgrade = any(line.lower().startswith("upgrade:") for line in header_lines)
        if upgrade:
            self.upgrades.append(target)
            headers += ["Connection: Upgrade"]
        else:
            headers += ["Connection: close"]
        headers += [f"X-Forwarded-Prefix: {self.prefix}"]
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        lines = [f"{method} {backend_target} {version}", *headers]
        upstream_writer.write("".join(f"{line}\r\n" for line in lines).encode("latin-1") + b"\r\n")
        await self._relay(reader, writer, upstream_reader, upstream_writer)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()

        # Whichever side ends first (the backend after its answer, either side of a WebSocket) ends both.
        tasks = [asyncio.create_task(pipe(reader, upstream_writer)), asyncio.create_task(pipe(upstream_reader, writer))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        for side in (writer, upstream_writer):
            with contextlib.suppress(ConnectionError, RuntimeError):
                side.close()
