"""Deployments to run the executor contract against: the embedded default (`local`: one server with its worker
processes) and the multi-node shape (`celery`: a web node and `nbrelay worker` processes on PostgreSQL, Redis and
Celery). Both take the same calls, so one test body serves both."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu
import pytest

from tests.conftest import ChildProcess, ServerProcess, fresh_postgres_url, fresh_redis_url, kernel_processes

RABBITMQ_URL = os.environ.get("NBRELAY_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def drop_rabbitmq_queue(url: str, queue: str) -> None:
    """Delete the test's own queue (Celery declares it durable: it would outlive the test)."""
    with kombu.Connection(url, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(queue)


@dataclass
class WorkerProcess(ChildProcess):
    """`nbrelay worker` in a subprocess."""

    workspace: Path
    data_dir: Path
    env: dict[str, str]
    slots: int = 1
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout_s: float = 60) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "worker.log"
        command = [sys.executable, "-m", "nbrelay", "worker", "--workspace", str(self.workspace)]
        command += ["--workers", str(self.slots)]
        env = {**os.environ, **self.env, "NBRELAY_DATA_DIR": str(self.data_dir)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready within {timeout_s} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass
class Deployment:
    """A web node and whatever runs its jobs; `tag` marks the kernels of this deployment (kernel_processes)."""

    kind: str
    server: ServerProcess
    workers: list[WorkerProcess] = field(default_factory=list)
    tag: str = ""

    def submit(self, notebook: str, **parameters: Any) -> int:
        with self.server.client() as http:
            response = http.post("/api/jobs", json={"notebook": notebook, "parameters": parameters})
        assert response.status_code == 202, response.text
        return int(response.json()["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        with self.server.client() as http:
            return dict(http.get(f"/api/jobs/{job_id}").json())

    def wait_for(self, job_id: int, **kw: Any) -> dict[str, Any]:
        return self.server.wait_for(job_id, **kw)

    def kernels(self) -> dict[int, int]:
        return kernel_processes(self.tag)

    def logs(self) -> str:
        return "\n".join([self.server.log(), *(w.log() for w in self.workers)])


@pytest.fixture
def deploy(tmp_path: Path, workspace: Path) -> Iterator[Any]:
    """deploy(kind, slots=N, workers=M, env={...}) -> Deployment: kind `local` (one server; `workers` ignored),
    `celery` (Redis as Celery's broker) or `celery-rabbitmq`."""
    (tmp_path / "reports").mkdir(exist_ok=True)  # shared folders exist before a worker starts (it refuses else)
    with ExitStack() as stack:

        def make(kind: str, *, slots: int = 1, workers: int = 1, env: dict[str, str] | None = None) -> Deployment:
            tag = uuid.uuid4().hex
            common = {"NBR_TEST_TAG": tag, "NBRELAY_REPORTS_DIR": str(tmp_path / "reports"), **(env or {})}
            if kind == "local":
                server = ServerProcess(workspace=workspace, data_dir=tmp_path / "data", workers=slots, env=common)
                stack.callback(server.stop)
                return Deployment(kind, server.start(), tag=tag)
            broker_url = stack.enter_context(fresh_redis_url())
            common |= {
                "NBRELAY_EXECUTOR": "celery",
                "NBRELAY_DATABASE_URL": stack.enter_context(fresh_postgres_url()),
                "NBRELAY_BROKER_URL": broker_url,
                "NBRELAY_LEASE_TIMEOUT_S": common.get("NBRELAY_LEASE_TIMEOUT_S", "3"),
                "NBRELAY_SECRET_KEY": secrets.token_hex(16),
            }
            if kind == "celery-rabbitmq":  # events on Redis, Celery's messages on RabbitMQ
                common["NBRELAY_CELERY_BROKER_URL"] = RABBITMQ_URL
                stack.callback(drop_rabbitmq_queue, RABBITMQ_URL, f"{broker_url.partition('?prefix=')[2]}.jobs")
            server = ServerProcess(workspace=workspace, data_dir=tmp_path / "web", workers=slots, env=common)
            stack.callback(server.stop)
            started = []
            for i in range(workers):
                worker = WorkerProcess(workspace, tmp_path / f"worker{i}", env=common, slots=slots)
                stack.callback(worker.stop)
                started.append(worker.start())
            return Deployment(kind, server.start(), started, tag=tag)

        yield make
