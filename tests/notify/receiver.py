"""A real HTTP server in a thread that receives webhooks: what each path answers (status codes in turn, or a
hang), and every request it got, with the time it arrived. With a TLS context, an HTTPS server."""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[Received] = []
        self.answers: dict[str, list[int]] = defaultdict(list)  # path -> statuses to answer in turn (then 200)
        self.hang_s: dict[str, float] = {}  # path -> how long to hold each request before answering
        self.redirect: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    queue = receiver.answers[self.path]
                    status = queue.pop(0) if queue else 200
                hang = receiver.hang_s.get(self.path, 0)
                if hang:
                    receiver._stop.wait(hang)
                if self.path in receiver.redirect:
                    self.send_response(302)
                    self.send_header("location", receiver.redirect[self.path])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                answer = b'{"ok":true}' if status < 300 else b"receiver says no"
                with contextlib.suppress(OSError):  # the sender gave up on a hanging request
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:  # the handshake is made at accept; one the client breaks off is dropped there
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout_s: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.at(path))} requests after {timeout_s} s, wanted {count}")


def verify(secret: str, request: Received) -> dict[str, Any]:
    """The payload, verified with the standardwebhooks package (raises when the signature is wrong)."""
    return Webhook(secret).verify(request.body, request.headers)
