"""The page across a server restart: it shows the connection dropping, reconnects by itself, and shows what
happened meanwhile (the job that was running ends "interrupted"), then works on as before."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, job_card, run_from_form, wait_live


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def test_page_recovers_after_a_restart_mid_job(server_factory: Any, pages: PageSession) -> None:
    server = server_factory(workers=1)
    page = pages.open(f"{server.url}/")
    wait_live(page)
    job = run_from_form(page, "sleep.ipynb", {"seconds": "60"})
    card = job_card(page, job)
    expect(card.locator(".job-tail")).to_contain_text("start")
    expect(card).to_have_attribute("data-state", "running")

    pill = page.locator(".conn")
    server.stop()
    expect(pill).to_have_attribute("data-status", "reconnecting")
    expect(pill).to_have_text("Reconnecting…")
    server.start()
    wait_live(page)

    # What happened while the page was away: the job was interrupted by the stop; the page got that event on
    # resuming, so the card, the red toast and a word about the reconnect all say so.
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".job-error")).to_have_text("interrupted: server stopped")
    toast = page.locator(".toast-error").filter(has_text="sleep.ipynb failed")
    expect(toast).to_contain_text("interrupted: server stopped")
    expect(page.locator(".toast-info").filter(has_text="Back online")).to_be_visible()
    assert server.wait_for(job)["error"]["reason"] == "interrupted: server stopped"

    # And the page goes on working on the new server process.
    again = run_from_form(page, "tiny.ipynb")
    expect(job_card(page, again)).to_have_attribute("data-state", "succeeded")
    expect(page.locator(".toast-success").filter(has_text="tiny.ipynb succeeded")).to_be_visible()
    pages.assert_no_page_errors()
