"""The web page's routes: `/` (the page, its base URL and headers), `/api/page` (auth mode, user, folders), and the
notebooks' default post-run steps the run dialog shows."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from nbrelay.api.page import render_index
from nbrelay.config import Settings
from tests.browser.page_support import create_token, notebook
from tests.conftest import ServerProcess


def test_page_is_served_with_its_modules_and_a_strict_policy(shared_server: ServerProcess) -> None:
    with shared_server.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "object-src 'none'" in policy and "frame-ancestors 'self'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<base" not in page.text  # no base path: links resolve against the page's own address
        assert 'src="static/app/main.js"' in page.text
        module = client.get("/static/app/main.js")
        assert module.status_code == 200 and "javascript" in module.headers["content-type"]
        info = client.get("/api/page").json()
    assert info["auth_mode"] == "none"
    assert info["base_path"] == ""
    assert info["user"] == {"name": "local", "admin": True, "home": "", "areas": None}


@pytest.mark.parametrize(("base_path", "href"), [("/nbrelay", "/nbrelay/"), ("/a/b.c/", "/a/b.c/"), ("/", None)])
def test_base_path_sets_the_pages_base_url(tmp_path: Any, base_path: str, href: str | None) -> None:
    settings = Settings(workspace=tmp_path, data_dir=tmp_path, base_path=base_path)
    html = render_index(settings)
    if href is None:
        assert "<base" not in html
    else:
        assert f'<base href="{href}">' in html
        assert html.index("<base") < html.index("static/app/style.css")  # before any relative link


@pytest.mark.parametrize("base_path", ["nbrelay", "/a b", '/"><script>', "/a//b", "/../x"])
def test_base_path_refuses_what_is_not_a_plain_path(tmp_path: Any, base_path: str) -> None:
    with pytest.raises(ValidationError):
        Settings(workspace=tmp_path, data_dir=tmp_path, base_path=base_path)


def test_page_info_in_token_mode(server_factory: Any) -> None:
    server = server_factory(workers=1, env={"NBRELAY_AUTH_MODE": "token", "NBRELAY_BASE_PATH": "/tools/nbrelay"})
    token = create_token(server, "dana")
    with server.client() as client:
        anonymous = client.get("/api/page")
        assert anonymous.status_code == 200
        assert anonymous.json()["user"] is None
        assert anonymous.json()["auth_mode"] == "token"
        assert anonymous.json()["base_path"] == "/tools/nbrelay"
        assert '<base href="/tools/nbrelay/">' in client.get("/").text
        info = client.get("/api/page", headers={"Authorization": f"Bearer {token}"}).json()
    assert info["user"] == {"name": "dana", "admin": False, "home": "users/dana", "areas": ["users/dana", "shared"]}


@pytest.mark.kernel
def test_parameters_give_the_notebooks_default_steps(shared_server: ServerProcess) -> None:
    steps = [{"action": "copy", "source": "report", "to": "publish/{notebook}.html"}]
    nb = json.loads(notebook("x = 1"))
    nb["metadata"]["nbrelay"] = {"steps": steps}
    with shared_server.client() as client:
        put = client.put("/api/contents/page-steps.ipynb", content=json.dumps(nb).encode())
        assert put.status_code == 201, put.text
        with_steps = client.get("/api/notebooks/page-steps.ipynb/parameters").json()
        without = client.get("/api/notebooks/tiny.ipynb/parameters").json()
    assert with_steps["default_steps"] == steps
    assert without["default_steps"] is None
