"""Errors that help, against a live server: a wrong or missing Content-Type names the expected one (415), broken
JSON says where (line, column), bodies over the limit are a 413 before they are read, deep nesting is refused
cleanly, and a 405 lists the methods the path really has."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live import LiveServer

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("errors")
    (root / "workspace").mkdir()
    started = LiveServer(root / "workspace", root / "data", max_body_bytes=LIMIT).start()
    yield started
    started.stop()


def error_of(response: httpx.Response) -> dict[str, str]:
    return response.json()["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/x"])
def test_a_json_route_names_the_content_type_it_reads(server: LiveServer, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(server.url + "/api/jobs", content=b'{"notebook": "x.ipynb"}', headers=headers, timeout=30)
    assert response.status_code == 415, response.text
    error = error_of(response)
    assert error["code"] == "unsupported_media_type"
    assert "application/json" in error["message"]
    assert (content_type or "no Content-Type") in error["message"]


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        (b'{"notebook": "x.ipynb",}', 1, 24),
        (b'{\n  "notebook": "x.ipynb",\n  "parameters": {"a": 1,,}\n}', 3, 25),
        (b'{"notebook": "x.ipynb"', 1, 23),
    ],
)
def test_broken_json_says_line_and_column(server: LiveServer, body: bytes, line: int, column: int) -> None:
    response = httpx.post(
        server.url + "/api/jobs", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert (error["line"], error["column"]) == (line, column)
    assert f"line {line}, column {column}" in error["message"]
    assert "problems" not in error  # no field name for what is not a field


def test_broken_json_in_a_contents_request_says_where_too(server: LiveServer) -> None:
    response = httpx.patch(server.url + "/api/contents/a.txt", content=b'{"path":\n x}', timeout=30)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json" and "line 2, column 2" in error_of(response)["message"]


def test_a_body_over_the_limit_is_413_before_it_is_read(server: LiveServer) -> None:
    big = b'{"notebook": "' + b"x" * LIMIT + b'"}'
    response = httpx.post(server.url + "/api/jobs", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    error = error_of(response)
    assert error["code"] == "payload_too_large" and str(LIMIT) in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"notebook": "'
        for _ in range(LIMIT // 1000 + 1):
            yield b"x" * 1000
        yield b'"}'

    streamed = httpx.post(server.url + "/api/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert error_of(streamed)["code"] == "payload_too_large" and str(LIMIT) in error_of(streamed)["message"]


def test_uploads_keep_their_own_limit(server: LiveServer) -> None:
    response = httpx.put(server.url + "/api/contents/big.bin", content=b"x" * (LIMIT * 4), timeout=30)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("depth", [70, 900, 20_000])
def test_deeply_nested_json_is_refused_cleanly(server: LiveServer, depth: int) -> None:
    body = b'{"notebook": "x.ipynb", "parameters": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    response = httpx.post(server.url + "/api/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert error_of(response)["code"] in ("invalid_json", "invalid_request")
    assert "nested" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/session", "DELETE, GET, HEAD, POST"),
        ("PUT", "/api/contents", "GET, HEAD, POST"),
        ("OPTIONS", "/api/contents/a/b.txt", "DELETE, GET, HEAD, PATCH, POST, PUT"),
        ("DELETE", "/api/jobs", "GET, HEAD, POST"),
        ("PUT", "/api/jobs/1/report", "GET, HEAD"),
    ],
)
def test_405_lists_every_method_of_the_path(server: LiveServer, method: str, path: str, allowed: str) -> None:
    response = httpx.request(method, server.url + path, timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert error_of(response)["code"] == "method_not_allowed" and allowed in error_of(response)["message"]


# paths that are no text (found from outside: %FF and %FE named one file, "\ufffd.txt"; a newline was a bare 404)
@pytest.mark.parametrize(
    ("method", "path", "says"),
    [
        ("PUT", "/api/contents/%FF.txt", "escapes bytes that are not UTF-8 text"),
        ("PUT", "/api/contents/%ED%A0%80.txt", "escapes bytes that are not UTF-8 text"),  # an encoded surrogate
        ("GET", "/api/contents/a%C3.txt", "escapes bytes that are not UTF-8 text"),  # cut short
        ("PUT", "/api/contents/a%0Ab.txt", "control characters are not allowed in paths"),
        ("GET", "/files/x%7F", "control characters are not allowed in paths"),
        ("GET", "/api/notebooks/a%0D.ipynb/parameters", "control characters are not allowed in paths"),
    ],
)
def test_a_path_that_is_no_text_is_400_path_refused(server: LiveServer, method: str, path: str, says: str) -> None:
    before = sorted(p.name for p in server.settings.workspace.iterdir())
    response = httpx.request(method, server.url + path, content=b"abc", timeout=30)
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == "path_refused" and says in error_of(response)["message"]
    assert sorted(p.name for p in server.settings.workspace.iterdir()) == before


def test_escaped_utf8_in_a_path_is_the_name_it_spells(server: LiveServer) -> None:
    response = httpx.put(server.url + "/api/contents/caf%C3%A9%20%F0%9F%98%80.txt", content=b"x", timeout=30)
    assert response.status_code == 201, response.text
    assert (server.settings.workspace / "café 😀.txt").read_bytes() == b"x"


def test_a_lone_surrogate_in_a_contents_body_is_422(server: LiveServer) -> None:
    before = sorted(p.name for p in server.settings.workspace.iterdir())
    for path, body in [
        ("/api/contents/", b'{"type": "directory", "name": "d\\ud800"}'),
        ("/api/contents/n.ipynb", b'{"type": "file", "format": "text", "content": "a\\udc00"}'),
    ]:
        method = "POST" if path.endswith("/") else "PUT"
        response = httpx.request(
            method, server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30
        )
        assert response.status_code == 422, response.text
        assert "lone UTF-16 surrogate" in error_of(response)["message"]
    assert sorted(p.name for p in server.settings.workspace.iterdir()) == before
