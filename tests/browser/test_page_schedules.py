"""The Schedules section in Chromium against a real server: make a schedule from a notebook's run form, see its
next run times, run it now and watch its job live, pause and resume it, and see a schedule made elsewhere appear
without a reload."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, wait_live
from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = support.start_server(tmp_path_factory.mktemp("page-schedules"), workers=1)
    yield server
    server.stop()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def test_schedule_from_the_run_form_then_run_now_and_watch_it_live(server: ServerProcess, pages: PageSession) -> None:
    page = pages.open(f"{server.url}/")
    wait_live(page)
    # The run form of hello.ipynb, a parameter filled in, then "Schedule…" instead of Run.
    page.locator(".file-row[data-path$='hello.ipynb'] [data-action=run]").click()
    run = page.locator("dialog.run-dialog:not(.schedule-dialog)")
    expect(run).to_be_visible()
    run.locator("#param-name").fill("{{ tick_date }}")
    run.get_by_role("button", name="Schedule…").click()
    dialog = page.locator("dialog.schedule-dialog")
    expect(dialog).to_be_visible()
    expect(run).to_have_count(0)
    # A refused cron is shown at its field; then a good one.
    dialog.locator("#schedule-cron").fill("0 9 * *")
    dialog.locator("#schedule-timezone").fill("Europe/Berlin")
    dialog.get_by_role("button", name="Create schedule").click()
    expect(dialog.locator("[data-field=cron] .field-error")).to_contain_text("expected 5")
    dialog.locator("#schedule-cron").fill("0 9 * * MON-FRI")
    dialog.get_by_role("button", name="Create schedule").click()
    expect(dialog).to_have_count(0)

    card = page.locator(".schedule-card").first
    expect(card.locator(".schedule-state")).to_have_text("Active")
    expect(card.locator(".schedule-when")).to_contain_text("0 9 * * MON-FRI · Europe/Berlin")
    runs = card.locator(".schedule-next li")
    expect(runs).to_have_count(5)
    for iso in runs.evaluate_all("(items) => items.map((li) => li.dataset.run)"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT09:00:00\+0[12]:00", iso), iso
    expect(runs.first).to_contain_text("09:00")
    schedule_id = int(card.get_attribute("data-schedule") or 0)
    stored = httpx.get(f"{server.url}/api/schedules/{schedule_id}", timeout=30).json()
    assert stored["parameters"] == {"name": "{{ tick_date }}"} and stored["notebook"] == "hello.ipynb"

    # Run now: its job shows on the card and in the jobs panel, and moves on live to succeeded.
    card.get_by_role("button", name="Run now").click()
    job = card.locator(".schedule-job")
    expect(job).to_have_count(1)
    job_id = job.get_attribute("data-job")
    expect(page.locator(f".job[data-job='{job_id}']")).to_be_visible()
    expect(job).to_have_attribute("data-state", "succeeded")
    expect(card.locator(".schedule-note")).to_contain_text(f"job #{job_id} succeeded")
    ran = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=30).json()
    assert ran["schedule_id"] == schedule_id and re.fullmatch(r"\d{4}-\d\d-\d\d", ran["parameters"]["name"])

    # Pause and resume.
    card.get_by_role("button", name="Pause").click()
    expect(card.locator(".schedule-state")).to_have_text("Paused")
    expect(card.locator(".schedule-next li")).to_have_count(0)
    card.get_by_role("button", name="Resume").click()
    expect(card.locator(".schedule-state")).to_have_text("Active")
    expect(card.locator(".schedule-next li")).to_have_count(5)

    # A schedule made elsewhere (the CLI, another tab) appears by its push event, and goes when deleted.
    made = httpx.post(
        f"{server.url}/api/schedules", json={"notebook": "plot.ipynb", "cron": "@hourly", "name": "hourly plot"}
    ).json()
    other = page.locator(f".schedule-card[data-schedule='{made['id']}']")
    expect(other.locator(".schedule-name")).to_have_text("hourly plot")
    assert httpx.delete(f"{server.url}/api/schedules/{made['id']}").status_code == 204
    expect(other).to_have_count(0)
    pages.assert_no_page_errors()
