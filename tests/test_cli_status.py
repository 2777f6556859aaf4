"""`nbrelay status`, run for real (`python -m nbrelay`) against real servers: one that starts while it waits, one
whose hub's Redis (a redis-server of the test's own) goes away and comes back, and addresses that are no server."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, free_port
from tests.hub.conftest import RedisServer
from tests.test_cli_files import fails, nbrelay, ok


def status(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return nbrelay("status", "--server", url, *args)


def test_status_waits_for_a_server_that_is_starting_and_says_what_answers(tmp_path: Path, workspace: Path) -> None:
    server = ServerProcess(workspace=workspace, data_dir=tmp_path / "data", workers=1)
    waiting = subprocess.Popen(
        [sys.executable, "-m", "nbrelay", "status", "--server", server.url, "--wait", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"COLUMNS": "200", "NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        server.start()
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        lines = out.splitlines()
        assert lines[0].startswith(f"{server.url}: nbrelay ") and lines[0].endswith(", ready")
        assert [line.split()[:2] for line in lines[1:]] == [["database", "ok"], ["hub", "ok"], ["executor", "ok"]]
    finally:
        waiting.kill()
        server.stop()


@pytest.mark.redis
def test_status_says_the_hubs_redis_is_away_exit_1_and_waits_for_it(tmp_path: Path, workspace: Path) -> None:
    redis_server = RedisServer(tmp_path).start()
    server = ServerProcess(
        workspace=workspace, data_dir=tmp_path / "data", workers=1, env={"NBRELAY_BROKER_URL": redis_server.url}
    )
    try:
        server.start()
        ok(status(server.url, "--wait", "30"))
        redis_server.kill()
        away = status(server.url)
        assert away.returncode == 1, away.stderr
        hub = next(line for line in away.stdout.splitlines() if line.split()[:1] == ["hub"])
        assert hub.split()[1] == "failing" and f"the hub's Redis at redis://127.0.0.1:{redis_server.port}/0" in hub
        assert "not ready" in away.stdout.splitlines()[0]
        assert '"ok": false' in status(server.url, "--json").stdout
        redis_server.start()
        ok(status(server.url, "--wait", "60"))  # once the node listens on Redis again
    finally:
        server.stop()
        redis_server.kill()


class NotNbrelay(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_status_of_no_server_or_another_one_is_a_line_and_exit_2() -> None:
    fails(status(f"http://127.0.0.1:{free_port()}"), "cannot reach the server")
    other = ThreadingHTTPServer(("127.0.0.1", 0), NotNbrelay)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        result = status(f"http://127.0.0.1:{other.server_port}")
        fails(result, "Not Found")
        assert "is it an nbrelay server" in result.stderr
    finally:
        other.shutdown()
