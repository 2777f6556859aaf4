"""The real sockjs-client (from npm, tests/browser/sockjs/) in Chromium against a real `nbrelay serve`: each
transport forced in turn receives a real job's legacy "2" message; protocol v1 works over SockJS as well.

Each transport gets its own browser context: streaming and long-polling requests hold connections, and one
context has only six per host.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route

from tests.browser.conftest import TIMEOUT_MS
from tests.conftest import NOTEBOOKS, ServerProcess

HERE = Path(__file__).parent
PAGE = HERE / "sockjs_page.html"
CLIENT = HERE / "sockjs" / "node_modules" / "sockjs-client" / "dist" / "sockjs.min.js"
CLIENT_URL = "/e2e/sockjs.min.js"  # served by a Playwright route, for the page and for the iframe page alike
LEGACY_TRANSPORTS = [
    "websocket",
    "xhr-streaming",
    "xhr-polling",
    "eventsource",
    "iframe-eventsource",
    "htmlfile",
    "iframe-htmlfile",
    "iframe-xhr-polling",
    "jsonp-polling",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not CLIENT.exists():
        pytest.fail(f"{CLIENT} is missing: run scripts/test, or `npm ci` in {CLIENT.parent.parent.parent}")
    root = tmp_path_factory.mktemp("sockjs")
    shutil.copytree(NOTEBOOKS, root / "workspace")
    env = {"NBRELAY_SOCKJS_CLIENT_URL": CLIENT_URL}
    server = ServerProcess(workspace=root / "workspace", data_dir=root / "data", workers=1, env=env).start()
    yield server
    server.stop()


def open_page(browser: Browser, server: ServerProcess, contexts: list[BrowserContext]) -> Page:
    context = browser.new_context()
    contexts.append(context)
    context.set_default_timeout(TIMEOUT_MS)
    page_html, client_js = PAGE.read_text(), CLIENT.read_text()

    def serve_page(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html; charset=utf-8", body=page_html)

    def serve_client(route: Route) -> None:
        route.fulfill(status=200, content_type="application/javascript; charset=utf-8", body=client_js)

    context.route(f"{server.url}/e2e/sockjs.html", serve_page)
    context.route(f"{server.url}{CLIENT_URL}", serve_client)
    page = context.new_page()
    page.goto(f"{server.url}/e2e/sockjs.html")
    page.wait_for_function("() => window.SockJS && window.connect")
    return page


def wait_for(page: Page, condition: str, what: str) -> None:
    try:
        page.wait_for_function(condition, polling=100, timeout=TIMEOUT_MS)
    except Exception as exc:
        log = page.evaluate("() => window.log")
        raise AssertionError(f"{what}: timed out; the page saw\n{json.dumps(log, indent=1)[-4000:]}") from exc


@pytest.fixture
def contexts() -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def test_every_transport_receives_a_finished_job(
    browser: Browser, server: ServerProcess, contexts: list[BrowserContext]
) -> None:
    pages: dict[str, Page] = {}
    for transport in LEGACY_TRANSPORTS:
        pages[transport] = page = open_page(browser, server, contexts)
        page.evaluate(
            "([url, transport]) => connect(url, transport, 'legacy')",
            [f"{server.url}/sockjs/websocket?loginName=tester", transport],
        )
    for transport, page in pages.items():
        wait_for(page, "() => log.some((e) => e.data && e.data.msgType === '1')", f"{transport}: unfinished list")
        wait_for(page, "() => log.some((e) => e.data && e.data.msgType === '0')", f"{transport}: heartbeat reply")
        opened = page.evaluate("() => log.filter((e) => e.kind === 'open').map((e) => e.transport)")
        assert opened == [transport]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()["id"]
    finished = f"() => log.some((e) => e.data && e.data.msgType === '2' && e.data.data.id === {job})"
    for transport, page in pages.items():
        wait_for(page, finished, f"{transport}: the finished job")
        done: list[dict[str, Any]] = page.evaluate(
            "() => log.filter((e) => e.data && e.data.msgType === '2').map((e) => e.data)"
        )
        assert [m["success"] for m in done] == [True], transport
        assert done[0]["data"]["htmlPath"] == f"/api/jobs/{job}/report"
        assert not page.evaluate("() => log.filter((e) => e.kind === 'close')"), transport


def test_protocol_v1_over_sockjs(browser: Browser, server: ServerProcess, contexts: list[BrowserContext]) -> None:
    pages = {}
    for transport in ("xhr-streaming", "xhr-polling"):
        pages[transport] = page = open_page(browser, server, contexts)
        page.evaluate("([url, transport]) => connect(url, transport, 'v1')", [f"{server.url}/sockjs/v1", transport])
    for transport, page in pages.items():
        wait_for(page, "() => log.some((e) => e.data && e.data.op === 'snapshot')", f"{transport}: snapshot")
        wait_for(page, "() => log.some((e) => e.data && e.data.op === 'pong')", f"{transport}: pong")
        welcome = page.evaluate("() => log.find((e) => e.data && e.data.op === 'welcome').data")
        assert welcome["protocol"] == 1 and welcome["user"] == "local"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()["id"]
    for transport, page in pages.items():
        wait_for(
            page,
            f"() => log.some((e) => e.data && e.data.type === 'job.succeeded' && e.data.data.job === {job})",
            f"{transport}: job.succeeded",
        )
        events = page.evaluate(f"() => log.filter((e) => e.data && e.data.data && e.data.data.job === {job})")
        kinds = [e["data"]["type"] for e in events]
        assert kinds[0] == "job.queued" and kinds[-1] == "job.succeeded" and "job.started" in kinds, transport
