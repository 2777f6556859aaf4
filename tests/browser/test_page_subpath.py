"""The page published under a sub-path by a reverse proxy (NBRELAY_BASE_PATH=/sub), with token auth: the log-in,
the WebSocket, the API and the report all go through /sub/…, and nothing asks for a path outside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import page_support as support
from tests.browser.page_proxy import PrefixProxy
from tests.browser.page_support import PageSession, job_card, run_from_form, wait_live


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageSession]:
    yield from support.page_session(browser, request)


def test_page_under_a_sub_path_behind_a_proxy_with_token_login(
    tmp_path_factory: pytest.TempPathFactory, pages: PageSession
) -> None:
    env = {"NBRELAY_AUTH_MODE": "token", "NBRELAY_BASE_PATH": "/sub"}
    server = support.start_server(tmp_path_factory.mktemp("page-sub"), workers=1, env=env)
    proxy = PrefixProxy("/sub", server.port).start()
    try:
        token = support.create_token(server, "carol", admin=True)
        # Opened as /sub, without the trailing slash: the base path setting keeps every link under /sub/.
        page = pages.open(proxy.url, wait_for="login")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".user-name")).to_have_text("carol")
        wait_live(page)
        assert "/sub/ws" in proxy.upgrades, proxy.upgrades

        job = run_from_form(page, "hello.ipynb", {"name": "Proxy"})
        toast = page.locator(".toast-success").filter(has_text="hello.ipynb succeeded")
        expect(toast).to_contain_text(f"Job #{job}")
        toast.get_by_role("button", name="View report").click()
        expect(page.frame_locator(".viewer iframe").get_by_text("Hello, Proxy!").first).to_be_visible()
        assert page.url == f"{proxy.url}#report/{job}"
        expect(page.locator(".history-item.current")).to_contain_text(f"#{job}")
        expect(job_card(page, job)).to_have_count(1)

        assert proxy.refused == [], f"the page asked for paths outside /sub: {proxy.refused}"
        assert any(t.startswith("/sub/static/app/") for t in proxy.targets)
        assert f"/sub/api/jobs/{job}/report" in proxy.targets
        pages.assert_no_page_errors()
    finally:
        proxy.stop()
        server.stop()
