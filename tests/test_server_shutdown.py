"""A stop with clients connected and a job running: every push client hears 4001 (reconnect and resume), also
those that come straight back, nothing is left for uvicorn to cancel, the job's end is published, and no task is
destroyed while pending."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import ServerProcess

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_closes_every_client_and_leaves_no_task_behind(tmp_path: Path, workspace: Path, sig: int) -> None:
    server = ServerProcess(workspace=workspace, data_dir=tmp_path / "data", workers=1).start(timeout_s=180)
    try:
        stop_with_clients(server, sig)
    finally:
        server.stop()


def stop_with_clients(server: ServerProcess, sig: int) -> None:
    job = httpx.post(f"{server.url}/api/jobs", json={"notebook": "sleep.ipynb"}, timeout=30).json()
    server.wait_for(job["id"], states=("running",), timeout_s=60)
    sse_lines: list[str] = []

    def follow(streams: str) -> None:
        with httpx.stream("GET", f"{server.url}/sse", params={"streams": streams}, timeout=60) as answer:
            for line in answer.iter_lines():
                sse_lines.append(line)

    def come_back_at_once() -> None:
        """A client that reconnects the moment it is told 4001, as the protocol asks, until it is refused."""
        while True:
            try:
                with httpx.stream("GET", f"{server.url}/sse", timeout=60) as answer:
                    for _ in answer.iter_lines():
                        pass
            except httpx.TransportError:
                return

    readers = [threading.Thread(target=follow, args=(s,), daemon=True) for s in ("user:local", f"job:{job['id']}")]
    readers += [threading.Thread(target=come_back_at_once, daemon=True) for _ in range(4)]
    for reader in readers:
        reader.start()
    silent = silent_websocket(server.port)  # it never answers the close: the goodbye waits for it a while
    with connect(server.url.replace("http", "ws") + "/ws") as websocket:
        assert json.loads(websocket.recv())["op"] == "welcome"
        websocket.send(json.dumps({"op": "subscribe", "stream": f"job:{job['id']}"}))
        deadline = time.monotonic() + 30
        while sum(line == "event: snapshot" for line in sse_lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop(sig)
        with pytest.raises(Exception):  # noqa: B017 (the close, whatever the library calls it)
            while True:
                websocket.recv(timeout=10)
        assert websocket.close_code == 4001
    for reader in readers:
        reader.join(10)
        assert not reader.is_alive()
    silent.close()
    assert sse_lines.count("event: close") == 2, sse_lines[-6:]
    assert sum('"code":4001' in line for line in sse_lines) == 2
    log = server.log()
    # (Not any "Traceback": a zygote still starting when its worker stops may report a broken pipe; runner's own.)
    for bad in (
        "Task was destroyed",
        "Exception in ASGI application",
        "CancelledError",
        "timeout graceful shutdown exceeded",
        "the hub is closing",
    ):
        assert bad not in log, log[-3000:]


def silent_websocket(port: int) -> socket.socket:
    """A /ws connection that completes its handshake, then reads and answers nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101"), "the handshake"
    return sock
