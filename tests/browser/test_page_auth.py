"""The page in auth mode token: the log-in form (a token traded for an HttpOnly cookie), and two users who see
only their own jobs and files (and both the shared folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, job_card, run_from_form, wait_live
from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = support.start_server(
        tmp_path_factory.mktemp("page-auth"), workers=1, env={"NBRELAY_AUTH_MODE": "token"}, examples=False
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokens(server: ServerProcess) -> dict[str, str]:
    return {name: support.create_token(server, name) for name in ("alice", "bob")}


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def log_in(pages: PageSession, url: str, token: str) -> Page:
    page = pages.open(url, wait_for="login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("html")).to_have_attribute("data-page", "app")
    wait_live(page)
    return page


def test_login_form_sets_an_httponly_cookie_and_logout_drops_it(
    server: ServerProcess, tokens: dict[str, str], pages: PageSession
) -> None:
    page = pages.open(f"{server.url}/", wait_for="login")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".login-card .field-error")).to_have_text("That token is unknown or was revoked.")
    expect(page.locator("html")).to_have_attribute("data-page", "login")

    page.get_by_label("API token").fill(tokens["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".user-name")).to_have_text("alice")
    wait_live(page)
    cookies = page.context.cookies()
    assert [c["httpOnly"] for c in cookies] == [True], cookies
    assert tokens["alice"] not in str(cookies), "the cookie must not be the token itself"
    # The home folder is where the browser starts.
    expect(page.locator(".crumb.current")).to_have_text("alice")

    page.reload()
    expect(page.locator("html")).to_have_attribute("data-page", "app")  # the cookie keeps the session
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("html")).to_have_attribute("data-page", "login")
    assert page.context.cookies() == []
    pages.assert_no_page_errors()


def test_two_users_see_only_their_own_jobs_and_files(
    server: ServerProcess, tokens: dict[str, str], pages: PageSession, tmp_path: Path
) -> None:
    alice = log_in(pages, f"{server.url}/", tokens["alice"])
    bob = log_in(pages, f"{server.url}/", tokens["bob"])

    # Alice uploads a notebook into her folder and runs it.
    local = tmp_path / "private.ipynb"
    local.write_text(support.steps_notebook(steps=2))
    alice.locator("[data-testid=upload-input]").set_input_files(str(local))
    expect(alice.locator(".file-row[data-path='users/alice/private.ipynb']")).to_be_visible()
    job = run_from_form(alice, "private.ipynb", {"name": "secret"})
    expect(job_card(alice, job)).to_have_attribute("data-state", "succeeded")
    expect(alice.locator(".toast-success").filter(has_text="private.ipynb succeeded")).to_be_visible()

    # A file in the shared folder reaches Bob live: his page is connected and listening.
    alice.locator(".crumbs button.crumb").first.click()
    alice.locator(".file-row[data-path='shared'] .file-open").click()
    expect(alice.locator(".crumbs")).to_contain_text("shared")  # the folder is open: uploads go there
    alice.locator("[data-testid=upload-input]").set_input_files(str(local))
    expect(alice.locator(".file-row[data-path='shared/private.ipynb']")).to_be_visible()
    bob.locator(".crumbs button.crumb").first.click()
    bob.locator(".file-row[data-path='shared'] .file-open").click()
    expect(bob.locator(".file-row[data-path='shared/private.ipynb']")).to_be_visible()

    # But nothing of Alice's own: no job, no toast, no folder, no report.
    expect(bob.locator(".jobs-card .empty")).to_be_visible()
    assert bob.locator(".job").count() == 0
    assert bob.locator(".toast").filter(has_text="private.ipynb").count() == 0
    bob.locator(".crumbs button.crumb").first.click()
    bob.locator(".file-row[data-path='users'] .file-open").click()
    expect(bob.locator(".file-row")).to_have_count(1)
    expect(bob.locator(".file-row .file-name")).to_have_text("bob")
    bob.goto(f"{server.url}/#report/{job}")
    expect(bob.locator(".viewer-title")).to_have_text("Report not found")
    assert bob.frame_locator(".viewer iframe").locator("body").count() == 0

    # Bob's own run shows on his page only.
    bob.locator(".viewer").get_by_role("button", name="Back to the jobs").click()
    bob.locator(".crumbs button.crumb").first.click()
    bob.locator(".file-row[data-path='shared'] .file-open").click()
    mine = run_from_form(bob, "private.ipynb")
    expect(job_card(bob, mine)).to_have_attribute("data-state", "succeeded")
    assert alice.locator(f".job[data-job='{mine}']").count() == 0
    pages.assert_no_page_errors()
