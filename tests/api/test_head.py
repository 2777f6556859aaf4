"""HEAD answers as GET would, without the body, on every GET route (load balancers health-check with HEAD;
`curl -I`): the same status and headers, for JSON, the page, workspace files, reports, static files and errors.
A HEAD on the endless /sse ends at once and leaves no connection behind; /ws is untouched."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from nbrelay.models import Job
from tests.api.test_reports import add_report
from tests.conftest import NOTEBOOKS
from tests.live import LiveServer

# Set per answer by the server, not by the route: when it was sent, and how a GET's body is framed.
PER_ANSWER = {"date", "transfer-encoding"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("head")
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "tiny.ipynb").write_bytes((NOTEBOOKS / "tiny.ipynb").read_bytes())
    started = LiveServer(workspace, root / "data").start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def job(server: LiveServer) -> Job:
    """A finished job with its report and executed notebook on disk."""
    return server.call(add_report(server.app.state.jobs.store, Path(server.settings.reports_dir)))


def headers_of(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name not in PER_ANSWER}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/health", 200),
        ("/", 200),  # the page
        ("/files/tiny.ipynb", 200),  # a workspace file, as an attachment
        ("/api/jobs/{job}/report", 200),  # a route that registers HEAD itself
        ("/api/jobs/{job}/notebook", 200),
        ("/api/jobs", 200),
        ("/static/nbrelay.js", 200),
        ("/openapi.json", 200),
        ("/api/jobs/999999", 404),
        ("/files/missing.ipynb", 404),
        ("/api/no-such-route", 404),
    ],
)
def test_head_answers_as_get_without_the_body(server: LiveServer, job: Job, path: str, status: int) -> None:
    url = server.url + path.format(job=job.id)
    get = httpx.get(url, timeout=30)
    head = httpx.head(url, timeout=30)
    assert (get.status_code, head.status_code) == (status, status), head.text
    assert headers_of(head) == headers_of(get)
    assert head.content == b""
    if status == 200 and "content-length" in get.headers:
        assert int(head.headers["content-length"]) == len(get.content) > 0


def test_head_on_sse_ends_at_once_and_leaves_no_connection(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    push = server.app.state.push
    with httpx.Client(base_url=server.url, timeout=10) as client:
        started = time.monotonic()
        head = client.head("/sse")
        assert time.monotonic() - started < 5  # not held open until a heartbeat or an event
        assert head.status_code == 200 and head.content == b""
        # No stray body bytes on the kept-alive connection: the next request on it reads a clean answer.
        assert client.get("/api/health").status_code == 200
        with client.stream("GET", "/sse") as get:
            assert headers_of(head) == headers_of(get)
            assert head.headers["content-type"].startswith("text/event-stream")
    deadline = time.monotonic() + 5
    while push.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not push.connections  # the HEAD's stream was closed, not left counting against the limits
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # ended as for a client that left


def test_websocket_and_other_methods_are_untouched(server: LiveServer) -> None:
    with connect(server.ws_url) as websocket:
        assert json.loads(websocket.recv())["op"] == "welcome"
    refused = httpx.delete(server.url + "/api/health", timeout=30)
    assert refused.status_code == 405 and refused.json()["error"]["code"] == "method_not_allowed"


def test_the_api_document_gains_no_head_operations(server: LiveServer) -> None:
    paths = httpx.get(server.url + "/openapi.json", timeout=30).json()["paths"]
    assert set(paths["/api/health"]) == {"get"}
    assert set(paths["/files/{path}"]) == {"get"}
