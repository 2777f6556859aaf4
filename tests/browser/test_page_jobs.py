"""The web page in Chromium against a real server: upload a notebook, run it from the generated form, watch its
progress, get the toast, open the report; run again with an ETA; cancel; the README's screenshot.

One server for the module (auth mode none, one worker): the tests add files and jobs, and each looks only at its
own. The screenshot test runs last, when there is some history to show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_support import (
    JOB_IDS,
    RECORD_PROGRESS,
    PageSession,
    job_card,
    open_app,
    run_from_form,
    submit,
    wait_live,
)
from tests.browser.test_push_page import BLOCK_WEBSOCKET
from tests.conftest import ServerProcess

SANDBOX = "allow-scripts allow-popups allow-popups-to-escape-sandbox"
MARKUP_NAME = "<img src=x onerror=alert(1)>.txt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = support.start_server(tmp_path_factory.mktemp("page-jobs"), workers=1)
    yield server
    server.stop()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def test_upload_run_watch_progress_toast_and_report(server: ServerProcess, pages: PageSession, tmp_path: Path) -> None:
    page = pages.open(f"{server.url}/", init_script=RECORD_PROGRESS)
    wait_live(page)
    before = page.locator(".job").evaluate_all(JOB_IDS)

    # Upload with the button (a real file chooser).
    local = tmp_path / "steps.ipynb"
    local.write_text(support.steps_notebook(steps=8))
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload").click()
    chooser.value.set_files(str(local))
    row = page.locator(".file-row[data-path='steps.ipynb']")
    expect(row).to_be_visible()
    expect(page.locator(".toast-success").filter(has_text="Uploaded steps.ipynb")).to_be_visible()
    assert (server.workspace / "steps.ipynb").read_text() == local.read_text()

    # The form is made from the notebook's parameters: types, defaults and help.
    row.locator("[data-action=run]").click()
    dialog = page.locator("dialog.run-dialog")
    expect(dialog.locator("h2")).to_have_text("Run steps.ipynb")
    expect(dialog.locator("#param-name")).to_have_value("world")
    expect(dialog.locator("#param-count")).to_have_value("3")
    expect(dialog.locator("#param-delay")).to_have_value("0.1")
    expect(dialog.locator("[data-param=count] .param-type")).to_have_text("int")
    expect(dialog.locator("[data-param=name] .field-help")).to_contain_text("who to greet")

    # A value of the wrong type: the API's 422 shows next to that field, and the dialog stays open.
    dialog.locator("#param-count").fill("many")
    dialog.locator("button[type=submit]").click()
    error = dialog.locator("[data-param=count] .field-error")
    expect(error).to_contain_text("expected an integer")
    expect(dialog.locator("[data-param=name] .field-error")).to_be_hidden()

    dialog.locator("#param-count").fill("2")
    dialog.locator("#param-name").fill("Ada")
    dialog.locator("#param-delay").fill("0.3")
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    page.wait_for_function("(n) => document.querySelectorAll('.job').length > n", arg=len(before))
    job = max(set(page.locator(".job").evaluate_all(JOB_IDS)) - set(before))
    card = job_card(page, job)
    expect(card.locator(".job-params")).to_have_text("name=Ada · count=2 · delay=0.3")

    # The progress bar moves cell by cell and ends full; the toast says it succeeded.
    expect(card).to_have_attribute("data-state", "succeeded")
    seen = page.evaluate("(job) => window.progressSeen[job] || []", str(job))
    values = [now for now, _ in seen]
    total = seen[-1][1]
    assert total >= 10, seen
    assert values == sorted(values), f"the progress bar went back: {seen}"
    assert values[-1] == total, f"the bar did not reach the end: {seen}"
    assert any(0 < v < total for v in values), f"never saw the bar part-way: {seen}"
    expect(card.locator(".progress")).to_have_attribute("aria-valuenow", str(total))
    toast = page.locator(".toast-success").filter(has_text="steps.ipynb succeeded")
    expect(toast).to_contain_text(f"Job #{job}")

    # The report opens from the toast, sandboxed, with the run's history beside it.
    toast.get_by_role("button", name="View report").click()
    viewer = page.locator(".viewer")
    expect(viewer).to_be_visible()
    expect(page.locator(".workspace")).to_be_hidden()
    frame = viewer.locator("iframe")
    expect(frame).to_have_attribute("sandbox", SANDBOX)
    expect(frame).to_have_attribute("src", f"api/jobs/{job}/report")
    expect(page.frame_locator(".viewer iframe").get_by_text("Hello, Ada x2")).to_be_visible()
    expect(viewer.locator(".viewer-title")).to_have_text("steps.ipynb")
    expect(viewer.locator(".history-item.current")).to_contain_text(f"#{job}")
    assert page.url.endswith(f"#report/{job}")

    # Downloads: the HTML report and the executed notebook.
    with page.expect_download() as html_download:
        viewer.get_by_role("link", name="HTML").click()
    assert html_download.value.suggested_filename == f"{job}-steps.html"
    assert "Hello, Ada x2" in Path(html_download.value.path()).read_text()
    with page.expect_download() as nb_download:
        viewer.get_by_role("link", name="Notebook").click()
    assert nb_download.value.suggested_filename == f"{job}-steps.ipynb"
    assert '"Ada"' in Path(nb_download.value.path()).read_text()

    viewer.get_by_role("button", name="Back to the jobs").click()
    expect(page.locator(".workspace")).to_be_visible()
    expect(viewer).to_be_hidden()

    # The notebook's history button opens its latest report too; the browser's back button closes it.
    row.locator("[data-action=reports]").click()
    expect(page).to_have_url(re.compile(rf"#report/{job}$"))
    expect(viewer).to_be_visible()
    expect(viewer.locator(".history-item.current")).to_contain_text(f"#{job}")
    page.go_back()
    expect(page.locator(".workspace")).to_be_visible()
    expect(viewer).to_be_hidden()
    pages.assert_no_page_errors()


def test_run_again_shows_eta_and_streaming_output(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server)
    first = submit(server, "wait.ipynb", seconds=1)
    expect(job_card(page, first)).to_have_attribute("data-state", "succeeded")

    # "Run again" fills the form with the last run's values; this run knows the last one took about a second
    # and a half, so with 6 s of waiting the ETA runs out and says so.
    job_card(page, first).locator("[data-action=again]").click()
    dialog = page.locator("dialog.run-dialog")
    expect(dialog.locator("#param-seconds")).to_have_value("1")
    dialog.locator("#param-seconds").fill("6")
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    second = first + 1
    card = job_card(page, second)
    expect(card).to_have_attribute("data-state", "running")
    expect(card.locator(".job-tail")).to_contain_text("waiting 6")
    expect(card.locator(".job-meta")).to_contain_text(re.compile(r"about .* left|longer than the last run"))
    expect(card.locator(".job-meta")).to_contain_text(re.compile(r"Cell \d of \d+ · .* elapsed"))
    expect(card.locator(".job-meta")).to_contain_text("longer than the last run")
    expect(card).to_have_attribute("data-state", "succeeded")
    expect(card.locator(".job-tail")).to_be_hidden()
    expect(card.locator(".job-meta")).to_contain_text("Took")
    pages.assert_no_page_errors()


def test_run_dialog_timeouts_and_post_run_steps(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server)
    page.locator(".file-row[data-path='hello.ipynb'] [data-action=run]").click()
    dialog = page.locator("dialog.run-dialog")
    dialog.get_by_text("Timeouts and post-run steps").click()

    # Errors of the advanced fields land next to them too: a timeout out of range, a step without a destination.
    dialog.locator("#run-timeout_s").fill("-5")
    dialog.locator("button[type=submit]").click()
    expect(dialog.locator("[data-field=timeout_s] .field-error")).to_contain_text("greater than 0")
    dialog.locator("#run-timeout_s").fill("300")
    dialog.get_by_role("button", name="Add step").click()
    step = dialog.locator(".step-row").first
    step.get_by_label("Source").fill("report")
    dialog.locator("button[type=submit]").click()
    expect(step.locator(".field-error")).to_contain_text("steps[0]")
    step.get_by_label("Destination").fill("published/{notebook}-{job}.html")
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)

    job = max(page.locator(".job").evaluate_all(JOB_IDS))
    expect(job_card(page, job)).to_have_attribute("data-state", "succeeded")
    assert server.wait_for(job)["timeout_s"] == 300
    # The published copy shows up in the listing by itself (file.changed).
    published = page.locator(".file-row[data-path='published']")
    expect(published).to_be_visible()
    published.locator(".file-open").click()
    expect(page.locator(f".file-row[data-path='published/hello-{job}.html']")).to_be_visible()
    page.locator(".crumbs button.crumb").first.click()
    pages.assert_no_page_errors()


def test_the_form_reads_modern_annotations_and_lines_with_two_equals(server: ServerProcess, pages: PageSession) -> None:
    """`n: int | None`, `Optional[dict]` and a default with a second '=' each get their field (papermill's reader
    dropped them, and the API refused them as unknown); a value of the declared kind reaches the notebook."""
    source = (
        "from typing import Optional\n"
        "limit: int | None = None  # at most this many\n"
        "opts: Optional[dict[str, int]] = None\n"
        'url = "https://example.org/?a=b"\n'
    )
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print(f'limit={limit!r} opts={opts!r} url={url}')"),
        ],
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    )
    nbformat.write(nb, server.workspace / "modern.ipynb")
    page = open_app(pages, server)
    page.locator(".file-row[data-path='modern.ipynb'] [data-action=run]").click()
    dialog = page.locator("dialog.run-dialog")
    expect(dialog.locator("#param-limit")).to_have_attribute("inputmode", "numeric")
    expect(dialog.locator("[data-param=limit] .field-help")).to_contain_text("at most this many")
    expect(dialog.locator("textarea#param-opts")).to_be_visible()  # an object: edited as JSON
    expect(dialog.locator("#param-url")).to_have_value("https://example.org/?a=b")
    dialog.locator("#param-limit").fill("5")
    dialog.locator("#param-opts").fill('{"a": 1}')
    dialog.locator("#param-url").fill("https://example.org/?x=y")
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    job = max(page.locator(".job").evaluate_all(JOB_IDS))
    expect(job_card(page, job)).to_have_attribute("data-state", "succeeded")
    assert server.wait_for(job)["parameters"] == {"limit": 5, "opts": {"a": 1}, "url": "https://example.org/?x=y"}
    pages.assert_no_page_errors()


def test_cancel_running_and_queued_jobs(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server)
    running = run_from_form(page, "wait.ipynb", {"seconds": "120"})
    card = job_card(page, running)
    expect(card.locator(".job-tail")).to_contain_text("waiting 120")

    # With the only worker busy, the next job waits: the page shows its place in the queue.
    queued = submit(server, "wait.ipynb", seconds=120)
    waiting = job_card(page, queued)
    expect(waiting).to_have_attribute("data-state", "queued")
    expect(waiting.locator(".job-meta")).to_contain_text("Position 1 in the queue")
    expect(page.locator("[data-section=queued] .count")).to_have_text("1")

    waiting.locator("[data-action=cancel]").click()
    expect(waiting).to_have_attribute("data-state", "cancelled")
    card.locator("[data-action=cancel]").click()
    expect(card).to_have_attribute("data-state", "cancelled")
    expect(card.locator(".badge")).to_have_text("Cancelled")
    expect(page.locator(".toast").filter(has_text="wait.ipynb cancelled").first).to_be_visible()
    assert server.wait_for(running)["state"] == "cancelled"
    pages.assert_no_page_errors()


def test_files_drop_folder_rename_copy_delete_and_live_changes(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server)
    files = page.locator(".files-card")

    # Drag and drop a file onto the list.
    drop = page.evaluate_handle(
        """(text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], 'dropped.ipynb', { type: 'application/x-ipynb+json' }));
            return data;
        }""",
        support.wait_notebook(),
    )
    files.dispatch_event("dragenter", {"dataTransfer": drop})
    expect(files).to_have_class(re.compile(r"\bdragging\b"))
    expect(files.locator(".drop-text")).to_have_text("Drop to upload to the workspace")
    files.dispatch_event("drop", {"dataTransfer": drop})
    expect(files).not_to_have_class(re.compile(r"\bdragging\b"))
    expect(page.locator(".file-row[data-path='dropped.ipynb']")).to_be_visible()

    # New folder, then into it and back.
    page.get_by_role("button", name="New folder").click()
    prompt = page.locator("dialog.modal-small")
    prompt.locator("input").fill("archive")
    prompt.get_by_role("button", name="Create").click()
    folder = page.locator(".file-row[data-path='archive']")
    expect(folder).to_be_visible()
    folder.locator(".file-open").click()
    expect(page.locator(".crumb.current")).to_have_text("archive")
    expect(page.locator(".file-list .empty")).to_contain_text("This folder is empty")
    page.locator(".crumbs button.crumb").first.click()
    expect(folder).to_be_visible()

    # Rename, copy, delete with confirmation.
    dropped = page.locator(".file-row[data-path='dropped.ipynb']")
    dropped.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Rename").click()
    prompt.locator("input").fill("kept.ipynb")
    prompt.get_by_role("button", name="Rename").click()
    kept = page.locator(".file-row[data-path='kept.ipynb']")
    expect(kept).to_be_visible()
    expect(dropped).to_have_count(0)

    # A file written beside the service (not through it) is listed with the next change the page is told of: here
    # the copy's.
    (server.workspace / "old.ipynb").write_text("the file to replace")
    kept.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Make a copy").click()
    copy = page.locator(".file-row[data-path='kept-Copy1.ipynb']")
    expect(copy).to_be_visible()

    # Renaming to a name that is taken says so, and renaming again replaces that file (after the warning only).
    old = page.locator(".file-row[data-path='old.ipynb']")
    expect(old).to_be_visible()
    copy.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Rename").click()
    prompt.locator("input").fill("old.ipynb")
    prompt.get_by_role("button", name="Rename").click()
    expect(prompt.locator(".field-error")).to_have_text(
        "old.ipynb already exists in the workspace. Rename again to replace it."
    )
    assert (server.workspace / "old.ipynb").read_text() == "the file to replace"
    prompt.get_by_role("button", name="Rename").click()
    expect(prompt).to_have_count(0)
    expect(copy).to_have_count(0)
    assert (server.workspace / "old.ipynb").read_text() == (server.workspace / "kept.ipynb").read_text()
    # A folder's name taken by another folder is said, and offers nothing to replace.
    folder.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Rename").click()
    (server.workspace / "other").mkdir()
    prompt.locator("input").fill("other")
    prompt.get_by_role("button", name="Rename").click()
    expect(prompt.locator(".field-error")).to_have_text("other already exists in the workspace.")
    prompt.get_by_role("button", name="Rename").click()
    expect(prompt.locator(".field-error")).to_have_text("other already exists in the workspace.")
    prompt.get_by_role("button", name="Cancel").click()
    assert (server.workspace / "archive").is_dir()
    old.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Make a copy").click()
    copy = page.locator(".file-row[data-path='old-Copy1.ipynb']")
    expect(copy).to_be_visible()

    copy.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Delete").click()
    confirm = page.locator("dialog.modal-small")
    expect(confirm).to_contain_text("old-Copy1.ipynb will be deleted")
    confirm.get_by_role("button", name="Cancel").click()
    expect(copy).to_be_visible()
    copy.locator("[data-action=more]").click()
    page.get_by_role("menuitem", name="Delete").click()
    confirm.get_by_role("button", name="Delete").click()
    expect(copy).to_have_count(0)
    assert not (server.workspace / "old-Copy1.ipynb").exists()

    # Changes made elsewhere (another client) arrive as file.changed events.
    with httpx.Client(base_url=server.url, timeout=30) as api:
        folder.locator(".file-open").click()
        expect(page.locator(".file-list .empty")).to_be_visible()
        # A name that is also markup shows as text (never parsed as HTML).
        assert api.put(f"/api/contents/archive/{MARKUP_NAME}", content=b"hi").status_code == 201
        expect(page.locator(".file-name")).to_have_text(MARKUP_NAME)
        assert api.delete(f"/api/contents/archive/{MARKUP_NAME}").status_code == 204
        expect(page.locator(".file-list .empty")).to_be_visible()

    # A file written beside the service (no event tells of it) is listed when the page comes back into view.
    (server.workspace / "archive" / "beside.ipynb").write_text("{}")
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
    expect(page.locator(".file-row[data-path='archive/beside.ipynb']")).to_be_visible()
    pages.assert_no_page_errors()


def test_connection_status_shows_the_sse_fallback(server: ServerProcess, pages: PageSession) -> None:
    page = pages.open(f"{server.url}/", init_script=BLOCK_WEBSOCKET)
    pill = page.locator(".conn")
    expect(pill).to_have_attribute("data-status", "fallback")
    expect(pill).to_have_text("Live · SSE")
    job = submit(server, "hello.ipynb", name="SSE")
    expect(job_card(page, job)).to_have_attribute("data-state", "succeeded")
    expect(page.locator(".toast-success").filter(has_text="hello.ipynb succeeded")).to_be_visible()
    pages.assert_no_page_errors()


# The Notification API and a hidden tab cannot be had for real in headless Chromium: both are stood in for
# here, recording what the page asks the browser to show.
FAKE_NOTIFICATIONS = """
(() => {
  window.shown = [];
  window.tabHidden = false;
  Object.defineProperty(document, 'hidden', { get: () => window.tabHidden });
  window.Notification = class {
    static permission = 'default';
    static requestPermission() { window.Notification.permission = 'granted'; return Promise.resolve('granted'); }
    constructor(title, options) { window.shown.push({ title, body: options.body }); }
    close() {}
  };
})();
"""


def test_browser_notification_when_the_tab_is_hidden(server: ServerProcess, pages: PageSession) -> None:
    page = open_app(pages, server, init_script=FAKE_NOTIFICATIONS)
    bell = page.locator(".topbar button[aria-pressed]")
    expect(bell).to_have_attribute("aria-pressed", "false")
    bell.click()
    expect(bell).to_have_attribute("aria-pressed", "true")

    shown = submit(server, "hello.ipynb", name="visible")
    expect(job_card(page, shown)).to_have_attribute("data-state", "succeeded")
    assert page.evaluate("() => window.shown") == []  # the tab is on screen: the toast is enough

    page.evaluate("() => { window.tabHidden = true; }")
    hidden = submit(server, "fails.ipynb")
    expect(job_card(page, hidden)).to_have_attribute("data-state", "failed")
    page.wait_for_function("() => window.shown.length > 0")
    assert page.evaluate("() => window.shown") == [
        {"title": "fails.ipynb failed", "body": f"Job #{hidden} · ZeroDivisionError: division by zero (cell 3)"}
    ]
    pages.assert_no_page_errors()


def test_readme_screenshot(server: ServerProcess, pages: PageSession, tmp_path: Path) -> None:
    """The page as the README shows it: a failure, a success, the tour in progress with its ETA, one queued."""
    page = open_app(pages, server)
    failed = run_from_form(page, "fails.ipynb")
    expect(job_card(page, failed)).to_have_attribute("data-state", "failed")
    expect(page.locator(".toast-error").filter(has_text="fails.ipynb failed")).to_contain_text("ZeroDivisionError")
    hello = run_from_form(page, "hello.ipynb", {"name": "Ada", "count": "2"})
    expect(job_card(page, hello)).to_have_attribute("data-state", "succeeded")
    page.locator(".toast-success .toast-close").first.click()

    # A short run of the tour first, so the long one has an ETA to show.
    short = run_from_form(page, "tour.ipynb", {"seconds_per_step": "3"})
    expect(job_card(page, short)).to_have_attribute("data-state", "succeeded")
    page.locator(".toast-success .toast-close").first.click()
    running = run_from_form(page, "tour.ipynb", {"seconds_per_step": "30"})
    queued = submit(server, "plot.ipynb", frequency=5)
    expect(job_card(page, running).locator(".job-tail")).to_contain_text("drawing a random walk: 25%")
    expect(job_card(page, running).locator(".job-meta")).to_contain_text(re.compile("left|longer than"))
    expect(job_card(page, queued).locator(".job-meta")).to_contain_text("Position 1 in the queue")
    expect(job_card(page, running).locator(".job-meta")).to_contain_text("Cell 3 of 8")  # the tour's first step
    page.mouse.move(0, 0)
    page.evaluate("() => document.activeElement?.blur()")
    # The README's picture is refreshed only on purpose (scripts/screenshot): a test run changes no tracked file.
    target = support.SCREENSHOT if os.environ.get("NBRELAY_REFRESH_SCREENSHOT") == "1" else tmp_path / "page.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000

    for job in (queued, running):
        job_card(page, job).locator("[data-action=cancel]").click()
        expect(job_card(page, job)).to_have_attribute("data-state", "cancelled")
    pages.assert_no_page_errors()
