"""A running job's output tail on the page: what it printed before a reload is still shown after it, once, and
progress bars ("\\r") and colours (ANSI escapes) look as they do in a terminal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_support import PageSession, job_card, open_app, submit, wait_live

TICKS = """import time
for i in range(ticks):
    print("tick", i, flush=True)
    time.sleep(0.5)
"""


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def tail_lines(card: Any) -> list[str]:
    return str(card.locator(".job-tail").text_content()).split("\n")


def test_reload_mid_run_keeps_the_output_printed_so_far(server: Any, pages: PageSession) -> None:
    (server.workspace / "ticks.ipynb").write_text(support.notebook("ticks: int = 12", TICKS, 'print("done")'))
    page = open_app(pages, server)
    job = submit(server, "ticks.ipynb")
    card = job_card(page, job)
    expect(card.locator(".job-tail")).to_contain_text("tick 3")

    page.reload()
    wait_live(page)
    card = job_card(page, job)
    # The lines printed before the reload come back from the job's stream; the next ones follow live, none twice.
    expect(card.locator(".job-tail")).to_contain_text("tick 0")
    expect(card.locator(".job-tail")).to_contain_text("tick 7")
    lines = tail_lines(card)
    first = int(lines[0].removeprefix("tick "))
    assert lines == [f"tick {i}" for i in range(first, first + len(lines))], lines
    pages.assert_no_page_errors()


def test_progress_bars_and_colours_show_as_in_a_terminal(server: Any, pages: PageSession) -> None:
    printing = r"""import sys, time
print("\x1b[1;32mready\x1b[0m", flush=True)
for percent in (10, 50, 100):
    sys.stdout.write(f"\r{percent:3d}%|{'#' * (percent // 10):<10}|")
    sys.stdout.flush()
    time.sleep(0.3)
print(flush=True)
print("\x1b[31mdone\x1b[0m", flush=True)
time.sleep(60)
"""
    (server.workspace / "bar.ipynb").write_text(support.notebook("x = 1", printing))
    page = open_app(pages, server)
    job = submit(server, "bar.ipynb")
    tail = job_card(page, job).locator(".job-tail")
    expect(tail).to_have_text(re.compile(r"done$"))
    assert tail_lines(job_card(page, job)) == ["ready", "100%|##########|", "done"]
    # The colours are drawn: "ready" bold and green, "done" red, the bar in the tail's own colour.
    ready, done = tail.locator("span", has_text="ready"), tail.locator("span", has_text="done")
    expect(ready).to_have_css("font-weight", "700")
    plain = tail.evaluate("(el) => getComputedStyle(el).color")
    colours = {
        ready.evaluate("(el) => getComputedStyle(el).color"),
        done.evaluate("(el) => getComputedStyle(el).color"),
    }
    assert len(colours | {plain}) == 3, (colours, plain)
    expect(tail.locator("span", has_text="100%")).to_have_count(0)
    pages.assert_no_page_errors()
