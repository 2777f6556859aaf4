"""The Python client's errors against a real server (`nbrelay serve` in a subprocess): one exception tree with
the server's, carrying what the server answered."""

from __future__ import annotations

import http.server
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nbrelay import client as client_module
from nbrelay import errors
from nbrelay.client import Client, NbrelayError, RemoteError
from tests.conftest import ServerProcess, free_port
from tests.live import LiveServer


def test_the_clients_error_is_the_services() -> None:
    assert client_module.NbrelayError is errors.NbrelayError
    assert client_module.RemoteError is errors.RemoteError
    assert issubclass(RemoteError, errors.NbrelayError)


def test_an_error_answer_carries_status_code_message_and_body(shared_server: ServerProcess) -> None:
    with Client(shared_server.url) as client, pytest.raises(NbrelayError) as raised:
        client.job(999_999)
    error = raised.value
    assert type(error) is RemoteError
    assert (error.status, error.code, error.message, error.hint) == (404, "job_not_found", "no job 999999", None)
    assert error.body == {"error": {"code": "job_not_found", "message": "no job 999999"}}
    assert str(error) == "no job 999999 (404 job_not_found)"


def test_an_error_answer_with_a_hint_keeps_it(shared_server: ServerProcess) -> None:
    with Client(shared_server.url) as client, pytest.raises(RemoteError) as raised:
        client.parameters("folder\\tiny.ipynb")
    error = raised.value
    assert (error.status, error.code, error.hint) == (400, "path_refused", "use '/' between folders")
    assert error.message == "backslashes are not allowed in paths: 'folder\\\\tiny.ipynb'"
    assert error.body["error"]["hint"] == error.hint
    assert error.to_dict() == error.body  # the same form the server answers with


@pytest.mark.kernel
def test_submit_takes_every_field_the_api_takes(shared_server: ServerProcess) -> None:
    """Found from outside: `kernel_name` and `steps` could not be given from Python."""
    with Client(shared_server.url) as client:
        job = client.submit("tiny.ipynb", {"x": 2}, timeout_s=60, cell_timeout_s=30, kernel_name="python3", steps=[])
        done = client.wait(job["id"], timeout_s=120)
        with pytest.raises(NbrelayError) as refused:
            client.submit("tiny.ipynb", kernel_name="no-such-kernel")
    assert done["state"] == "succeeded" and done["kernel_name"] == "python3" and done["steps"] == []
    assert (done["timeout_s"], done["cell_timeout_s"]) == (60, 30)
    assert refused.value.status == 422 and "no-such-kernel" in refused.value.message


def test_a_missing_report_raises_the_same_error(shared_server: ServerProcess) -> None:
    with Client(shared_server.url) as client, pytest.raises(RemoteError) as raised:
        client.report(999_999)
    assert (raised.value.status, raised.value.code) == (404, "job_not_found")


def test_a_server_that_is_not_there_is_status_0_unreachable(tmp_path: Path) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    with Client(address, timeout_s=5) as client:
        for call in (client.jobs, lambda: client.download("a.txt", tmp_path / "a.txt")):
            with pytest.raises(RemoteError) as raised:
                call()
            assert (raised.value.status, raised.value.code) == (0, "unreachable")
            assert raised.value.message.startswith(f"cannot reach the server at {address}: ")
    assert list(tmp_path.iterdir()) == []  # the download left nothing behind


def test_the_error_survives_pickling_whole() -> None:
    error = RemoteError(409, "conflict", "a file is there", {"error": {"code": "conflict"}}, hint="overwrite=True")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is RemoteError
    assert (copy.status, copy.code, copy.message, copy.body, copy.hint) == (
        409,
        "conflict",
        "a file is there",
        {"error": {"code": "conflict"}},
        "overwrite=True",
    )
    assert str(copy) == str(error) == "a file is there (409 conflict)"


class _Away(http.server.BaseHTTPRequestHandler):
    """What a proxy answers while the service behind it restarts: 502, at once (nginx in HTTP/1.1; HAProxy's
    error pages are HTTP/1.0)."""

    def do_GET(self) -> None:
        self.send_response(502)
        self.send_header("content-length", "0")
        self.send_header("connection", "close")  # else a kept connection would answer 502 after the restart too
        self.end_headers()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/1.0"])
def test_follow_and_wait_outlast_a_proxys_502_while_the_server_restarts(
    workspace: Path, tmp_path: Path, protocol: str
) -> None:
    """Found from outside: behind nginx, follow() gave up at the first 502 of a restart, and wait() at the first
    refused poll; a push client without a proxy reconnected."""
    port = free_port()
    first = LiveServer(workspace, tmp_path / "data", port=port).start()
    try:
        with Client(first.url) as client:
            done = client.wait(client.submit("tiny.ipynb")["id"], timeout_s=120)
    finally:
        first.stop()
    away = http.server.ThreadingHTTPServer(("127.0.0.1", port), type("Away", (_Away,), {"protocol_version": protocol}))
    threading.Thread(target=away.serve_forever, daemon=True).start()
    seen: dict[str, Any] = {}

    def follow() -> None:
        with Client(first.url) as client:
            seen["follow"] = list(client.follow(done["id"]))

    def wait() -> None:
        with Client(first.url) as client:
            seen["wait"] = client.wait(done["id"], timeout_s=120)

    threads = [threading.Thread(target=work) for work in (follow, wait)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # both have met 502s by now
    assert all(thread.is_alive() for thread in threads) and not seen
    away.shutdown()
    away.server_close()
    again = LiveServer(workspace, tmp_path / "data", port=port).start()
    try:
        for thread in threads:
            thread.join(timeout=120)
    finally:
        again.stop()
    assert seen["wait"]["state"] == done["state"] == "succeeded"
    assert [m["op"] for m in seen["follow"]] == ["state"] and seen["follow"][0]["job"]["state"] == "succeeded"
