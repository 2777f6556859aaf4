"""Helpers for the tests of the web page (test_page_*.py): notebooks made for them, a server with the example
workspace, API tokens, and the page opened in Chromium with what it logged kept for failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from nbrelay.app import seed_workspace
from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS
from tests.conftest import ServerProcess

expect.set_options(timeout=TIMEOUT_MS)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "images" / "page.png"
VIEWPORT = {"width": 1280, "height": 800}


def notebook(parameters: str, *cells: str) -> str:
    """A Python notebook: a cell tagged `parameters` with `parameters`, then code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    tagged = nbformat.v4.new_code_cell(parameters)
    tagged.metadata["tags"] = ["parameters"]
    nb.cells = [tagged, *(nbformat.v4.new_code_cell(source) for source in cells)]
    return nbformat.writes(nb)


def steps_notebook(steps: int = 8) -> str:
    """Parameters of several types, then `steps` cells that each wait `delay` seconds and print, then a greeting."""
    parameters = "\n".join(
        [
            'name: str = "world"  # who to greet',
            "count: int = 3  # how many greetings",
            "delay: float = 0.1  # seconds per step",
        ]
    )
    waits = [f'time.sleep(delay)\nprint("step {i} of {steps}", flush=True)' for i in range(1, steps + 1)]
    return notebook(parameters, "import time", *waits, 'print(f"Hello, {name} x{count}")')


def wait_notebook() -> str:
    """Says it is waiting, then sleeps `seconds` (for cancels, queues and ETAs)."""
    return notebook(
        "seconds: float = 60.0  # how long to wait",
        'print("waiting", seconds, flush=True)',
        "import time\ntime.sleep(seconds)",
        'print("done")',
    )


def page_workspace(root: Path, *, examples: bool = True) -> Path:
    """A workspace with the example notebooks (hello, plot, fails) and wait.ipynb."""
    workspace = root / "workspace"
    workspace.mkdir(parents=True)
    if examples:
        seed_workspace(workspace)
    (workspace / "wait.ipynb").write_text(wait_notebook())
    return workspace


def start_server(
    root: Path, *, workers: int = 1, env: dict[str, str] | None = None, examples: bool = True
) -> ServerProcess:
    workspace = page_workspace(root, examples=examples)
    server = ServerProcess(workspace=workspace, data_dir=root / "data", workers=workers, env=env or {})
    return server.start()


def create_token(server: ServerProcess, name: str, *, admin: bool = False) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NBRELAY_")}
    command = [sys.executable, "-m", "nbrelay", "token", "create", name, "--data-dir", str(server.data_dir)]
    result = subprocess.run(
        [*command, "--admin"] if admin else command,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


class PageSession:
    """The browser contexts a test opens; on failure, a screenshot and the page's errors of each go to artifacts."""

    def __init__(self, browser: Browser):
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.pages: list[Page] = []

    def open(
        self,
        url: str,
        *,
        init_script: str | None = None,
        wait_for: str = "app",
        prepare: Callable[[BrowserContext], None] | None = None,
        **context_options: Any,
    ) -> Page:
        """A new context's page at `url`; `prepare` sees the context first (to route or watch its requests).
        `context_options` go to the new context (a phone's viewport, say)."""
        context = self.browser.new_context(**{"viewport": VIEWPORT, **context_options})
        context.set_default_timeout(TIMEOUT_MS)
        if init_script:
            context.add_init_script(init_script)
        if prepare is not None:
            prepare(context)
        self.contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        console: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
        page.errors = errors  # type: ignore[attr-defined]
        page.console = console  # type: ignore[attr-defined]
        self.pages.append(page)
        page.goto(url)
        if wait_for:
            expect(page.locator("html")).to_have_attribute("data-page", wait_for)
        return page

    def assert_no_page_errors(self) -> None:
        for page in self.pages:
            assert not page.errors, f"uncaught errors in the page: {page.errors}"  # type: ignore[attr-defined]

    def close(self, failed: bool, name: str) -> None:
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            for i, page in enumerate(self.pages):
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{name}-{i}.png"))
                    log = {"errors": page.errors, "console": page.console[-60:]}  # type: ignore[attr-defined]
                    (ARTIFACTS / f"{name}-{i}.log.json").write_text(json.dumps(log, indent=1))
                except Exception:  # the page may be gone; the failure itself is what matters
                    pass
        for context in self.contexts:
            context.close()


def page_session(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    """The body of each test module's `pages` fixture: `yield from page_session(browser, request)`."""
    session = PageSession(browser)
    yield session
    report = getattr(request.node, "rep_call", None)
    session.close(bool(report is not None and report.failed), request.node.name)


def open_app(pages: PageSession, server: ServerProcess, path: str = "/", **kw: Any) -> Page:
    """The page at `path` of `server`, once its connection is live."""
    page = pages.open(f"{server.url}{path}", **kw)
    wait_live(page)
    return page


def submit(server: ServerProcess, notebook: str, **parameters: object) -> int:
    """A job of `notebook` submitted over the API (not the page); its id."""
    answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": notebook, "parameters": parameters}, timeout=30)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def wait_live(page: Page) -> None:
    expect(page.locator(".conn")).to_have_attribute("data-status", "live")


def job_card(page: Page, job: int | str) -> Any:
    return page.locator(f".job[data-job='{job}']")


JOB_IDS = "(cards) => cards.map((c) => Number(c.dataset.job))"


def run_from_form(page: Page, notebook: str, values: dict[str, str] | None = None) -> int:
    """Open the run dialog of `notebook` in the folder on screen, fill fields by parameter name, submit; the job id."""
    before = page.locator(".job").evaluate_all(JOB_IDS)
    page.locator(f".file-row[data-path$='{notebook}'] [data-action=run]").click()
    dialog = page.locator("dialog.run-dialog")
    expect(dialog).to_be_visible()
    for name, value in (values or {}).items():
        dialog.locator(f"#param-{name}").fill(value)
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    new_card = "(before) => [...document.querySelectorAll('.job')].some((c) => !before.includes(Number(c.dataset.job)))"
    page.wait_for_function(new_card, arg=before)
    return max(set(page.locator(".job").evaluate_all(JOB_IDS)) - set(before))


# Records every value the progress bars of the page take (per job), so a test can tell it saw the bar move.
RECORD_PROGRESS = """
(() => {
  window.progressSeen = {};
  const note = (bar) => {
    const card = bar.closest('.job');
    if (!card) return;
    const seen = (window.progressSeen[card.dataset.job] ??= []);
    const value = [Number(bar.getAttribute('aria-valuenow')), Number(bar.getAttribute('aria-valuemax'))];
    const last = seen[seen.length - 1];
    if (!last || last[0] !== value[0] || last[1] !== value[1]) seen.push(value);
  };
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === 'attributes' && r.target.matches?.('.progress')) note(r.target);
      for (const node of r.addedNodes ?? []) node.querySelectorAll?.('.progress').forEach(note);
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-valuenow'] });
})();
"""
