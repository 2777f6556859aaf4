"""The Notifications section in Chromium against a real server: add a webhook endpoint (its secret shown once),
run a job, watch its delivery arrive in the endpoint's delivery log live, redeliver; set e-mail recipients."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, wait_live
from tests.conftest import ServerProcess
from tests.notify.receiver import Receiver, verify


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"NBRELAY_WEBHOOK_ALLOW_PRIVATE": "true", "NBRELAY_NOTIFY_POLL_S": "0.2"}
    server = support.start_server(tmp_path_factory.mktemp("page-webhooks"), workers=1, env=env)
    yield server
    server.stop()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def test_add_an_endpoint_and_watch_its_delivery_log(
    server: ServerProcess, pages: PageSession, receiver: Receiver
) -> None:
    page = pages.open(f"{server.url}/")
    wait_live(page)
    page.get_by_role("button", name="Notifications").click()
    dialog = page.locator("dialog.modal-notify")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".hook-empty")).to_have_text("No endpoints yet.")

    dialog.get_by_label("Endpoint URL").fill(receiver.url())
    dialog.get_by_role("button", name="Add endpoint").click()
    secret_box = dialog.locator(".secret-box")
    expect(secret_box).to_be_visible()
    secret = dialog.locator(".secret-value").inner_text()
    assert secret.startswith("whsec_")
    expect(secret_box.get_by_role("button", name="Copy the secret")).to_be_visible()
    hook = dialog.locator(".hook")
    expect(hook).to_have_count(1)
    expect(hook.locator(".hook-url")).to_have_text(receiver.url())
    hook.get_by_role("button", name="Deliveries").click()
    expect(hook.locator(".delivery-log")).to_have_text("No deliveries yet.")

    answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": "hello.ipynb"}, timeout=30)
    assert answer.status_code == 202, answer.text
    job = answer.json()["id"]
    # The attempt comes over push (delivery.attempted) and the open log is read again: no reload, no click.
    row = hook.locator("tr.delivery[data-state='delivered']")
    expect(row).to_have_count(1)
    expect(row.locator("td").first).to_have_text(f"#{job}")
    expect(row.locator(".delivery-status")).to_have_text("200")
    expect(row.locator(".delivery-attempts")).to_have_text("1")
    expect(row.locator(".delivery-latency")).to_contain_text(" ms")
    (request,) = receiver.wait_for("/hook", 1)
    assert verify(secret, request)["data"]["job_id"] == job

    row.get_by_role("button", name="Redeliver").click()
    expect(row.locator(".delivery-attempts")).to_have_text("1")  # a fresh round, delivered again
    requests = receiver.wait_for("/hook", 2)
    assert requests[1].headers["webhook-id"] == requests[0].headers["webhook-id"]

    # E-mail recipients: saved, and read back when the section opens again.
    dialog.get_by_label("Recipients").fill("ops@example.com, me@example.com")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator(".toast").filter(has_text="E-mail recipients saved")).to_be_visible()
    assert httpx.get(f"{server.url}/api/notify/email", timeout=10).json()["addresses"] == [
        "ops@example.com",
        "me@example.com",
    ]
    pages.assert_no_page_errors()
