"""The page under awkward conditions: a phone's width, a very long error, no network, histories longer than a
page, a report opened while its job runs or for a job that does not exist.

One server for the module (auth mode none, one worker). Long lists come from routed API answers rather than
from hundreds of real jobs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, job_card, open_app, submit
from tests.conftest import ServerProcess

LONG_MESSAGE = "<b>bold</b> " + "z" * 3000
PHONE = {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True}
FINISHED_AT = "2026-01-01T00:00:00Z"

# The elements whose right edge is past the window's (fixed ones, toasts, included), and the page's width.
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > width + 1);
  return { width, scrollWidth: document.documentElement.scrollWidth,
           wide: wide.slice(0, 10).map((e) => `${e.tagName}.${e.className}`) };
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = support.start_server(tmp_path_factory.mktemp("page-display"), workers=1)
    notebook = support.notebook("", f"raise ValueError({LONG_MESSAGE!r})")
    (server.workspace / "long_error.ipynb").write_text(notebook)
    (server.workspace / "types.ipynb").write_text(support.notebook("i: int = 1\nf: float = 0.5\nn = None"))
    yield server
    server.stop()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def wait_state(server: ServerProcess, job: int, states: set[str]) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        answer = httpx.get(f"{server.url}/api/jobs/{job}", timeout=30).json()
        if answer["state"] in states:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"job {job} never reached {states}")


def in_window(page: Page, box: dict[str, float] | None) -> bool:
    size = page.viewport_size
    assert box is not None and size is not None
    return box["y"] >= 0 and box["y"] + box["height"] <= size["height"] and box["x"] + box["width"] <= size["width"]


def as_token_mode(context: BrowserContext) -> None:
    """The page believes it is in token mode (so it draws Sign out); the server stays in auth mode none."""

    def handle(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "auth_mode": "token"})

    context.route("**/api/page", handle)


def paged(items: Callable[[int], dict[str, object]], total: int, key: str) -> Callable[[Route], None]:
    """A routed list answer of the API ({key: [...], total, limit, offset}) with `total` items made by `items(i)`."""

    def handle(route: Route) -> None:
        query = parse_qs(urlparse(route.request.url).query)
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", ["50"])[0])
        listed = [items(i) for i in range(offset, min(total, offset + limit))]
        route.fulfill(json={key: listed, "total": total, "limit": limit, "offset": offset})

    return handle


def test_the_form_sends_what_was_typed_and_run_again_what_the_job_sent(
    server: ServerProcess, pages: PageSession
) -> None:
    page = open_app(pages, server)
    # Past 2^53, an integer is sent exact (a JavaScript number would round it), and shown so on the card.
    job = support.run_from_form(page, "types.ipynb", {"i": "12345678901234567891"})
    expect(job_card(page, job).locator(".job-params")).to_have_text("i=12345678901234567891")
    assert httpx.get(f"{server.url}/api/jobs/{job}", timeout=30).json()["parameters"] == {"i": 12345678901234567891}

    # A float out of range is refused in its field, not sent as null.
    page.locator(".file-row[data-path$='types.ipynb'] [data-action=run]").click()
    dialog = page.locator("dialog.run-dialog")
    dialog.locator("#param-f").fill("1e999")
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator("[data-param=f] .field-error")).to_have_text("1e999 is out of range: too large for a float")
    dialog.get_by_role("button", name="Cancel").click()

    # Run again: the untyped string "123" goes again as a string (shown quoted), not as the integer 123.
    job = submit(server, "types.ipynb", n="123")
    wait_state(server, job, {"succeeded"})
    before = page.locator(".job").evaluate_all(support.JOB_IDS)
    job_card(page, job).locator("[data-action=again]").click()
    expect(dialog.locator("#param-n")).to_have_value('"123"')
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    new_card = "(before) => [...document.querySelectorAll('.job')].some((c) => !before.includes(Number(c.dataset.job)))"
    page.wait_for_function(new_card, arg=before)
    again = max(set(page.locator(".job").evaluate_all(support.JOB_IDS)) - set(before))
    assert httpx.get(f"{server.url}/api/jobs/{again}", timeout=30).json()["parameters"] == {"n": "123"}
    pages.assert_no_page_errors()


def test_nothing_is_wider_than_a_phone(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server, prepare=as_token_mode, **PHONE)
    job = submit(server, "long_error.ipynb")
    expect(job_card(page, job)).to_have_attribute("data-state", "failed")
    expect(page.locator(".toast-error")).to_be_visible()
    overflow = page.evaluate(OVERFLOW)
    assert overflow["scrollWidth"] <= 375 and not overflow["wide"], overflow
    assert in_window(page, page.get_by_role("button", name="Sign out").bounding_box())
    pages.assert_no_page_errors()


def test_a_long_error_keeps_the_toast_and_its_buttons_on_screen(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server)
    job = submit(server, "long_error.ipynb")
    card = job_card(page, job)
    expect(card).to_have_attribute("data-state", "failed")
    toast = page.locator(".toast-error").filter(has_text="long_error.ipynb failed")
    expect(toast).to_be_visible()
    assert in_window(page, toast.bounding_box())
    assert (toast.bounding_box() or {"height": 0})["height"] < 250
    # The card's error is cut to a few lines too, the whole text in its title.
    assert (card.bounding_box() or {"height": 0})["height"] < 250
    expect(card.locator(".job-error")).to_have_attribute("title", re.compile("z{3000}"))

    toast.get_by_role("button", name="Show all").click()
    expect(toast.get_by_role("button", name="Show less")).to_be_visible()
    assert in_window(page, toast.bounding_box())
    toast.get_by_role("button", name="Dismiss").click(timeout=5000)
    expect(toast).to_have_count(0)
    pages.assert_no_page_errors()


def test_going_offline_shows_at_once_and_coming_back_reconnects(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server)
    pill = page.locator(".conn")
    page.context.set_offline(True)
    expect(pill).to_have_attribute("data-status", "reconnecting", timeout=5000)  # not a heartbeat window later
    expect(pill).to_have_text("Offline")
    page.context.set_offline(False)
    expect(pill).to_have_attribute("data-status", "live", timeout=15000)
    pages.assert_no_page_errors()


def test_the_history_shows_older_reports_page_by_page(server: ServerProcess, pages: PageSession) -> None:
    job = submit(server, "hello.ipynb", name="history")
    wait_state(server, job, {"succeeded"})

    def report(i: int) -> dict[str, object]:
        number = job - i
        return {"job": number, "notebook": "hello.ipynb", "state": "succeeded", "finished_at": FINISHED_AT}

    def prepare(context: BrowserContext) -> None:
        context.route("**/api/reports?*", paged(report, 120, "reports"))

    page = open_app(pages, server, f"/#report/{job}", prepare=prepare)
    items = page.locator(".history-item")
    more = page.locator(".viewer-history .list-more")
    expect(items).to_have_count(50)
    expect(page.locator(".viewer-history .count")).to_have_text("120")
    expect(more).to_have_text("Show older (70 more)")
    more.click()
    expect(items).to_have_count(100)
    more.click()
    expect(items).to_have_count(120)
    expect(more).to_be_hidden()
    expect(items.last).to_have_attribute("data-job", str(job - 119))
    pages.assert_no_page_errors()


def test_the_jobs_panel_shows_older_jobs_page_by_page(server: ServerProcess, pages: PageSession) -> None:
    def finished(i: int) -> dict[str, object]:
        return {
            "id": 10_000 - i,
            "notebook": "hello.ipynb",
            "state": "succeeded",
            "parameters": {},
            "progress": {"cell": 1, "total": 1},
            "duration_s": 1.0,
            "created_at": FINISHED_AT,
            "finished_at": FINISHED_AT,
        }

    listing = paged(finished, 75, "jobs")

    def handle(route: Route) -> None:
        query = parse_qs(urlparse(route.request.url).query)
        if query.get("state") == ["queued"] or "notebook" in query:
            route.fulfill(json={"jobs": [], "total": 0, "limit": 1, "offset": 0})
        else:
            listing(route)

    def prepare(context: BrowserContext) -> None:
        context.route(lambda url: urlparse(url).path.endswith("/api/jobs"), handle)

    page = open_app(pages, server, prepare=prepare)
    cards = page.locator(".job-section-finished .job")
    more = page.locator(".job-section-finished .list-more")
    expect(cards).to_have_count(30)
    more.click()
    expect(cards).to_have_count(60)
    more.click()
    expect(cards).to_have_count(75)
    expect(more).to_be_hidden()
    expect(page.locator(".job-section-finished .count")).to_have_text("75")
    pages.assert_no_page_errors()


def test_the_report_of_a_running_job_says_it_runs(server: ServerProcess, pages: PageSession) -> None:
    job = submit(server, "wait.ipynb", seconds=60)
    try:
        wait_state(server, job, {"running"})
        page = open_app(pages, server, f"/#report/{job}")
        expect(page.locator(".viewer-sub")).to_contain_text(f"Job #{job} · running, started")
        expect(page.locator(".viewer-sub")).not_to_contain_text("took")
    finally:
        httpx.post(f"{server.url}/api/jobs/{job}/cancel", timeout=30)
    expect(page.locator(".viewer-sub")).to_contain_text("took")  # shown again once it ended
    pages.assert_no_page_errors()


def test_a_missing_report_says_so_once_and_shows_no_history(server: ServerProcess, pages: PageSession) -> None:
    job = submit(server, "hello.ipynb", name="missing")
    wait_state(server, job, {"succeeded"})
    page = open_app(pages, server, f"/#report/{job}")
    expect(page.locator(".viewer-history .count")).to_be_visible()
    page.evaluate("location.hash = '#report/999999'")
    expect(page.locator(".viewer-title")).to_have_text("Report not found")
    message = page.locator(".viewer-frame .empty p").first.inner_text()
    assert page.locator(".viewer").inner_text().count(message) == 1
    expect(page.locator(".viewer-history .section-title")).to_have_text("History")
    expect(page.locator(".history-item")).to_have_count(0)
    pages.assert_no_page_errors()


def test_the_run_form_of_a_notebook_without_its_kernel_says_so_and_does_not_run(
    server: ServerProcess, pages: PageSession
) -> None:
    """Found from outside: the form opened as any other, and "unknown kernel 'ir'" came only on Run."""
    nb = (
        '{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"kernelspec": {"name": "ir", "language": "R"}}}'
    )
    (server.workspace / "in-r.ipynb").write_text(nb)
    page = open_app(pages, server)
    page.locator(".file-row[data-path='in-r.ipynb'] [data-action=run]").click()
    dialog = page.locator("dialog.run-dialog")
    expect(dialog.locator(".form-error")).to_contain_text("The kernel ir is not installed on the server")
    expect(dialog.locator("button[type=submit]")).to_be_disabled()
    pages.assert_no_page_errors()
