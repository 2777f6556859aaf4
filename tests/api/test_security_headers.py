"""Security headers: the page keeps its strict policy, every API answer (errors included) says nosniff, a
referrer policy and a CSP that forbids rendering or framing it, and answers that set their own policy (reports,
downloads) keep it unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from nbrelay.api.guards import API_CSP, SecurityHeaders
from nbrelay.api.jobs import REPORT_HEADERS
from tests.live import LiveServer, bearer, make_token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("headers")
    (root / "workspace").mkdir()
    started = LiveServer(root / "workspace", root / "data", auth_mode="token").start()
    yield started
    started.stop()


def test_the_page_has_a_strict_policy_and_cannot_be_framed_by_others(server: LiveServer) -> None:
    page = httpx.get(server.url + "/", timeout=30)
    assert page.status_code == 200
    policy = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
    assert policy["default-src"] == ["'self'"] and policy["script-src"] == ["'self'"]  # no inline script
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'self'"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in page.text and " on" not in page.text.split("<body", 1)[1].split(">", 1)[0]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/health", 200),
        ("GET", "/api/reports", 401),  # no token
        ("GET", "/api/jobs/1", 404),
        ("GET", "/api/jobs/0", 422),
        ("GET", "/api/no-such-route", 404),
        ("DELETE", "/api/jobs", 405),
        ("POST", "/api/jobs", 415),
    ],
)
def test_api_answers_and_errors_carry_the_headers(server: LiveServer, method: str, path: str, status: int) -> None:
    token = make_token(server, "alice") if status != 401 else None
    response = httpx.request(method, server.url + path, headers=bearer(token) if token else {}, timeout=30)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["content-security-policy"] == API_CSP


def test_static_files_are_nosniff(server: LiveServer) -> None:
    script = httpx.get(server.url + "/static/nbrelay.js", timeout=30)
    assert script.status_code == 200 and script.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in script.headers  # a script's own CSP would mean nothing


def test_a_route_that_sets_its_own_policy_keeps_it() -> None:
    """Reports run their scripts in a sandbox without the app's origin: the middleware must not touch that."""

    async def report(request: object) -> HTMLResponse:
        return HTMLResponse("<p>report</p>", headers=REPORT_HEADERS)

    async def data(request: object) -> JSONResponse:
        return JSONResponse({"a": 1}, headers={"Referrer-Policy": "no-referrer"})

    app = SecurityHeaders(Starlette(routes=[Route("/report", report), Route("/data", data)]))

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            return await client.get(path)

    answer = asyncio.run(get("/report"))
    assert answer.headers.get_list("content-security-policy") == [REPORT_HEADERS["Content-Security-Policy"]]
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["x-content-type-options"] == "nosniff"
    data_answer = asyncio.run(get("/data"))
    assert data_answer.headers["referrer-policy"] == "no-referrer"
    assert data_answer.headers["content-security-policy"] == API_CSP
