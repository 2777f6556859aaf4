"""The page in Chromium: a job whose kernel is starting says so (not 0/0), then counts its cells from 1, and a
failed job names its failing cell as the report numbers it (In [n])."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, job_card, wait_live
from tests.conftest import ServerProcess
from tests.slow_kernel import NAME, GatedKernel


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> GatedKernel:
    return GatedKernel(tmp_path_factory.mktemp("gated-kernel"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gated: GatedKernel) -> Iterator[ServerProcess]:
    server = support.start_server(tmp_path_factory.mktemp("page-cells"), workers=1, env=gated.env)
    yield server
    gated.open()
    server.stop()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def submit(server: ServerProcess, notebook: str, **body: object) -> int:
    answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": notebook, **body}, timeout=30)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def test_starting_kernel_then_cells_then_the_failing_cell(
    server: ServerProcess, gated: GatedKernel, pages: PageSession
) -> None:
    page = pages.open(f"{server.url}/")
    wait_live(page)
    gated.close()

    starting = submit(server, "hello.ipynb", kernel_name=NAME)
    card = job_card(page, starting)
    expect(card.locator(".job-meta")).to_contain_text("Starting the kernel…")
    expect(card.locator("[role=progressbar]")).to_have_attribute("aria-label", "starting the kernel")
    gated.open()
    expect(card).to_have_attribute("data-state", "succeeded", timeout=90_000)

    failing = submit(server, "fails.ipynb")  # divisor = 0: print is cell 2, the division cell 3
    card = job_card(page, failing)
    expect(card).to_have_attribute("data-state", "failed", timeout=90_000)
    expect(card.locator(".job-error")).to_have_text("ZeroDivisionError: division by zero (cell 3)")
    pages.assert_no_page_errors()
