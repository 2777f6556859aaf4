"""Browser fixtures: Debian's Chromium driven by Python Playwright, and the test page served same-origin.

Never `playwright install`: the browser is the system's /usr/bin/chromium (scripts/test installs it through
scripts/browser.sh), and Playwright's own driver ships inside its wheel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from playwright.sync_api import Browser, Page, Playwright, Route, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
PAGE_HTML = Path(__file__).parent / "page.html"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The page comes from a Playwright route, which has no server address, so Chromium counts it as a public
    # page and its Local Network Access checks block the WebSocket to 127.0.0.1 (fetch and EventSource are let
    # through). Served by nbrelay itself, the page and the socket are both loopback and nothing is checked.
    "--disable-features=LocalNetworkAccessChecks,LocalNetworkAccessChecksWebSockets",
]
TIMEOUT_MS = 90_000  # two slow shared cores: be generous


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium. Run scripts/test, which installs it "
            "(scripts/browser.sh: ensure_chromium), or `apt-get install -y chromium`.",
            pytrace=False,
        )
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def open_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """open_page(server, init_script=None) → a page at <server>/e2e/page.html whose client is connecting.

    The page's HTML comes from tests/browser/page.html through a Playwright route (so the product needs no test
    route); everything else, /static/nbrelay.js included, comes from the real server, same-origin.
    """
    contexts = []
    pages: list[Page] = []

    def open_(server: Any, init_script: str | None = None) -> Page:
        context = browser.new_context(viewport={"width": 900, "height": 560})
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        if init_script is not None:
            context.add_init_script(init_script)
        page = context.new_page()
        pages.append(page)
        console: list[str] = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
        page.console = console  # type: ignore[attr-defined]
        html = PAGE_HTML.read_text()

        def serve_page(route: Route) -> None:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

        page.route(f"{server.url}/e2e/page.html", serve_page)
        page.goto(f"{server.url}/e2e/page.html")
        page.wait_for_function("() => window.client && Array.isArray(window.log)", timeout=TIMEOUT_MS)
        return page

    yield open_
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        # Leave what the page saw next to the screenshots: the first thing to read when a browser test fails.
        ARTIFACTS.mkdir(exist_ok=True)
        for i, page in enumerate(pages):
            name = f"{request.node.name}-{i}"
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
                (ARTIFACTS / f"{name}.log.json").write_text(json.dumps(page_log(page), indent=1))
            except Exception:  # the page may be gone; the failure itself is what matters
                pass
    for context in contexts:
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def page_log(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("() => window.log")  # type: ignore[no-any-return]
