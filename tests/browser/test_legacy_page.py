"""A plain page written against the legacy envelope, unchanged, in Chromium: "1" on open, "0" for its
heartbeats, "2" with success true when its job finishes and success false for a failing notebook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser

PAGE = Path(__file__).with_name("legacy_page.html")


def test_legacy_page_gets_heartbeats_open_list_and_finished_jobs(browser: Browser, server_factory: Any) -> None:
    server = server_factory(workers=1)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(
            f"{server.url}/legacy.html",
            lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE.read_text()),
        )
        page.goto(f"{server.url}/legacy.html")
        page.wait_for_function("() => window.log.some((m) => m.msgType === '1')", timeout=60_000)
        page.wait_for_function("() => window.log.some((m) => m.msgType === '0')", timeout=60_000)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            good = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()["id"]
            page.wait_for_function(
                f"() => window.log.some((m) => m.msgType === '2' && m.data.id === {good} && m.success === true)",
                timeout=90_000,
            )
            bad = http.post("/api/jobs", json={"notebook": "fail.ipynb"}).json()["id"]
            page.wait_for_function(
                f"() => window.log.some((m) => m.msgType === '2' && m.data.id === {bad} && m.success === false)",
                timeout=90_000,
            )
        finished = page.evaluate("() => window.log.filter((m) => m.msgType === '2')")
        assert {m["data"]["id"]: m["success"] for m in finished} == {good: True, bad: False}
        assert page.locator("#tasks li").count() >= 3
    finally:
        context.close()
