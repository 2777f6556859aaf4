"""A redis-server of a test's own (the shared one must not be stopped or reconfigured), plain or over TLS."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.deploy.conftest import Certificate


class RedisServer:
    """Started empty on a port of its own (no persistence); stopped and started again at will. With `tls`, it
    listens over TLS only, with that certificate, and does not ask clients for one; with `password`, it asks for
    that one (the URL carries it); `extra`: more of redis-server's options."""

    def __init__(
        self, folder: Path, tls: Certificate | None = None, password: str | None = None, extra: Sequence[str] = ()
    ):
        self.folder = folder
        self.extra = list(extra)
        self.port = free_port()
        self.tls = tls
        self.password = password
        login = f":{password}@" if password else ""
        self.url = f"{'rediss' if tls else 'redis'}://{login}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        command = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        command += self.extra
        if self.password:
            command += ["--requirepass", self.password]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError), self.client() as client:
                if client.ping():
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self) -> redis.Redis:
        if self.tls is None:
            return redis.Redis.from_url(self.url)
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, ssl=True, ssl_ca_certs=str(self.tls.cert)
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def tls_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, Certificate.make(tmp_path / "tls")).start()
    yield server
    server.kill()
