"""Nothing lost, nothing twice: while events flow to clients of every transport, directly and through nginx with
TLS, their connections are cut at random and the server is killed and started again on the same data folder.
Every client ends with every event of its streams exactly once, in order (docs/reliability.md)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from tests.chaos.scenario import CI, EventChaos, check, make_tokens, server_env
from tests.conftest import NOTEBOOKS, ServerProcess, kernel_processes
from tests.deploy.conftest import Certificate, Nginx


def test_every_client_gets_every_event_once_in_order_through_cuts_and_a_restart(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(NOTEBOOKS, workspace)
    tag = uuid.uuid4().hex
    tokens = make_tokens(tmp_path / "data", [f"user{k}" for k in range(CI.users)])
    server = ServerProcess(workspace, tmp_path / "data", workers=1, env=server_env(CI, tag))
    certificate = Certificate.make(tmp_path / "tls")
    nginx = Nginx(tmp_path / "nginx", certificate, server.port)
    try:
        server.start(timeout_s=180)  # generous: only against a hang, on a shared machine
        nginx.start()
        figures = EventChaos(server, nginx, certificate.client_context(), CI, tokens, log=print).run()
    finally:
        nginx.stop()
        server.stop()
    check(figures, CI, server.log())
    assert not kernel_processes(tag), "a kernel outlived the server"
