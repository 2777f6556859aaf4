"""Every page works without internet: with each request to a host other than the service aborted, the page, the
API docs (Swagger UI and ReDoc) and a report with math render, and nothing the browser asked for failed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession
from tests.conftest import ServerProcess


def math_notebook() -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "# Euler\n\nThe identity $e^{i\\pi}+1=0$, and $$\\int_0^1 x^2\\,dx=\\frac{1}{3}$$"
        ),
        nbformat.v4.new_code_cell(
            "from IPython.display import Latex, Math, display\n"
            "display(Math(r'\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}'))\n"
            "display(Latex(r'Area: $\\pi r^2$'))"
        ),
    ]
    return nbformat.writes(nb)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("offline")
    server = support.start_server(root, workers=1)
    (server.workspace / "math.ipynb").write_text(math_notebook())
    yield server
    server.stop()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


class Offline:
    """Aborts every request to another host (recorded in `blocked`) and records the requests that failed."""

    def __init__(self, server: ServerProcess):
        self.host = urlsplit(server.url).netloc
        self.blocked: list[str] = []
        self.failed: list[str] = []

    def open(self, pages: PageSession, url: str, *, wait_for: str = "") -> Page:
        return pages.open(url, wait_for=wait_for, prepare=self._watch)

    def _watch(self, context: BrowserContext) -> None:
        context.route("**/*", self._route)
        context.on("requestfailed", self._failed)

    def _route(self, route: Route) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == self.host:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")

    def _failed(self, request: Request) -> None:
        self.failed.append(f"{request.method} {request.url}: {request.failure}")

    def assert_self_contained(self) -> None:
        assert self.blocked == [], f"asked for other hosts: {self.blocked}"
        assert self.failed == [], f"failed requests: {self.failed}"


def test_the_page_docs_and_a_report_with_math_work_offline(
    server: ServerProcess, pages: PageSession, tmp_path: Path
) -> None:
    offline = Offline(server)
    job = server.client().post("/api/jobs", json={"notebook": "math.ipynb"}).json()
    assert server.wait_for(job["id"], timeout_s=120)["state"] == "succeeded"

    page = offline.open(pages, f"{server.url}/", wait_for="app")
    expect(page.locator(".file-row[data-path$='math.ipynb']")).to_be_visible()
    support.wait_live(page)

    docs = offline.open(pages, f"{server.url}/docs")
    expect(docs.locator(".opblock").first).to_be_visible()
    expect(docs.locator(".opblock-summary-path", has_text="/api/jobs").first).to_be_visible()

    summary = server.client().get("/openapi.json").json()["paths"]["/api/health"]["get"]["summary"]
    redoc = offline.open(pages, f"{server.url}/redoc")
    expect(redoc.get_by_role("heading", name=summary).first).to_be_visible()

    report = offline.open(pages, f"{server.url}/api/jobs/{job['id']}/report")
    expect(report.get_by_role("heading", name="Euler")).to_be_visible()
    formulas = report.locator("math")
    expect(formulas).to_have_count(4)  # e^{iπ}+1=0, the integral, the sum, πr²
    rendered = report.locator(".jp-RenderedMarkdown, .jp-OutputArea-output").all_inner_texts()
    assert not [t for t in rendered if "$" in t or "\\" in t], rendered  # no TeX left as text
    # Typeset: the fraction is laid out as one (numerator above denominator), not as a line of characters.
    numerator, denominator = (report.locator("mfrac").first.locator(":scope > *").nth(i) for i in (0, 1))
    top, bottom = numerator.bounding_box(), denominator.bounding_box()
    assert top and bottom and top["y"] + top["height"] <= bottom["y"] + 1, (top, bottom)
    superscript = report.locator("msup").first.locator(":scope > *").nth(1).bounding_box()
    base = report.locator("msup").first.locator(":scope > *").nth(0).bounding_box()
    assert superscript and base and superscript["y"] < base["y"], (base, superscript)

    offline.assert_self_contained()
    pages.assert_no_page_errors()


def test_a_report_loads_nothing_its_outputs_ask_for_elsewhere(server: ServerProcess, pages: PageSession) -> None:
    """Found from outside: an output's <img>, <iframe> or fetch() reached any host as the report was opened (a
    beacon: who read it, when, from where). The report's policy lets it load nothing; its own images still show."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "<img src='https://example.com/x.png'><iframe src='https://example.com/'></iframe>"
        ),
        nbformat.v4.new_code_cell(
            "from IPython.display import HTML, Image, display\n"
            "display(HTML(\"<script>fetch('https://example.com/beacon').catch(() => {})</script>\"))\n"
            "display(Image(data=bytes.fromhex('89504e470d0a1a0a0000000d4948445200000001000000010806000000'\n"
            "    '1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f6d3e60000000049454e44ae426082')))"
        ),
    ]
    (server.workspace / "beacons.ipynb").write_text(nbformat.writes(nb))
    job = server.client().post("/api/jobs", json={"notebook": "beacons.ipynb"}).json()
    assert server.wait_for(job["id"], timeout_s=120)["state"] == "succeeded"
    offline = Offline(server)
    report = offline.open(pages, f"{server.url}/api/jobs/{job['id']}/report")
    image = report.locator(".jp-OutputArea-output img").first
    expect(image).to_be_visible()
    assert image.evaluate("(img) => img.complete && img.naturalWidth") == 1  # a data: image loads
    report.wait_for_timeout(500)  # the script's fetch, had it gone out
    assert offline.blocked == [], f"the report asked for other hosts: {offline.blocked}"
