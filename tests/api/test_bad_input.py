"""Bad submissions: each answers with the right status and error code, creates no job and writes no file."""

from __future__ import annotations

import http.client
import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.kernel

PATH_CODES = {"path_refused", "path_outside_workspace"}


# helpers ------------------------------------------------------------------------------------------------------------
def files_under(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def total_jobs(server: ServerProcess) -> int:
    response = httpx.get(f"{server.url}/api/jobs", timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def settle(server: ServerProcess) -> None:
    """Let jobs a wrongly accepted request created finish, so that they do not write into the next test."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = httpx.get(f"{server.url}/api/jobs", params={"state": "unfinished"}, timeout=30)
        if response.json()["total"] == 0:
            return
        time.sleep(0.1)


def post_raw(server: ServerProcess, **kw: Any) -> httpx.Response:
    # A fresh connection per request: an error answer must not spoil the next test's connection.
    return httpx.post(f"{server.url}/api/jobs", timeout=30, **kw)


def assert_rejected(
    server: ServerProcess, status: int, codes: str | set[str], *, body: Any = None, content: bytes | None = None
) -> dict[str, Any]:
    """POST the body; check the status and error code, that no job was created and that no file appeared."""
    codes = {codes} if isinstance(codes, str) else codes
    jobs_before = total_jobs(server)
    workspace_before = files_under(server.workspace)
    reports_before = files_under(server.data_dir / "reports")
    if content is not None:
        response = post_raw(server, content=content, headers={"content-type": "application/json"})
    else:
        response = post_raw(server, json=body)
    jobs_after = total_jobs(server)
    if jobs_after != jobs_before:
        settle(server)
    assert response.status_code == status, f"{content or body!r}: {response.status_code} {response.text}"
    error = response.json()["error"]
    assert error["code"] in codes, error
    assert error["message"]
    assert jobs_after == jobs_before, "a rejected request must not create a job"
    assert files_under(server.workspace) == workspace_before
    assert files_under(server.data_dir / "reports") == reports_before
    return error  # type: ignore[no-any-return]


# notebooks that cannot run ------------------------------------------------------------------------------------------
def test_malformed_notebook_is_422_invalid_notebook(shared_server: ServerProcess) -> None:
    assert_rejected(shared_server, 422, "invalid_notebook", body={"notebook": "malformed.ipynb"})


def test_notebook_with_an_invalid_schema_is_422_invalid_notebook(shared_server: ServerProcess) -> None:
    assert_rejected(shared_server, 422, "invalid_notebook", body={"notebook": "invalid_schema.ipynb"})


@pytest.mark.parametrize("name", ["missing.ipynb", "no/such/folder/x.ipynb"])
def test_missing_notebook_is_404_notebook_not_found(shared_server: ServerProcess, name: str) -> None:
    assert_rejected(shared_server, 404, "notebook_not_found", body={"notebook": name})


def test_a_file_that_is_not_a_notebook_is_422(shared_server: ServerProcess) -> None:
    assert_rejected(shared_server, 422, "not_a_notebook", body={"notebook": "not_a_notebook.txt"})


@pytest.mark.parametrize("name", ["a-folder", "a-folder/", "looks-like.ipynb", "."])
def test_a_folder_is_422(shared_server: ServerProcess, name: str) -> None:
    (shared_server.workspace / "a-folder").mkdir(exist_ok=True)
    (shared_server.workspace / "looks-like.ipynb").mkdir(exist_ok=True)
    assert_rejected(shared_server, 422, "not_a_notebook", body={"notebook": name})


# paths that would leave the workspace -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "../x.ipynb",
        "../../etc/passwd",
        "/etc/passwd",
        "%2e%2e/x.ipynb",
        "%252e%252e%252fx.ipynb",
        "..%2fx.ipynb",
        "a/../../x.ipynb",
        "a\\..\\x.ipynb",
        "x\u0000.ipynb",
        "..",
        "./../tiny.ipynb",
        "tiny.ipynb/../../tiny.ipynb",
        "C:/x.ipynb",
        "\\\\server\\share\\x.ipynb",
        "tiny.ipynb\n",
    ],
)
def test_paths_outside_the_workspace_are_400(shared_server: ServerProcess, path: str) -> None:
    assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": path})


def test_the_real_file_behind_a_traversal_is_still_refused(shared_server: ServerProcess) -> None:
    """The answer is the same whether or not the target exists: no 404 that would tell what is outside."""
    outside = shared_server.workspace.parent / "outside.ipynb"
    shutil.copy(shared_server.workspace / "tiny.ipynb", outside)
    assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": "../outside.ipynb"})
    assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": str(outside)})
    missing = assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": "../missing-outside.ipynb"})
    present = assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": "../outside.ipynb"})
    assert missing["code"] == present["code"]


def test_a_symlink_to_a_notebook_outside_the_workspace_is_400(shared_server: ServerProcess) -> None:
    outside = shared_server.workspace.parent / "outside-target"
    outside.mkdir(exist_ok=True)
    shutil.copy(shared_server.workspace / "tiny.ipynb", outside / "o.ipynb")
    link = shared_server.workspace / "escape.ipynb"
    if not link.is_symlink():
        link.symlink_to(outside / "o.ipynb")
    assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": "escape.ipynb"})


def test_a_symlinked_folder_leading_outside_is_400(shared_server: ServerProcess) -> None:
    outside = shared_server.workspace.parent / "outside-folder"
    outside.mkdir(exist_ok=True)
    shutil.copy(shared_server.workspace / "tiny.ipynb", outside / "o.ipynb")
    link = shared_server.workspace / "escape-dir"
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    assert_rejected(shared_server, 400, PATH_CODES, body={"notebook": "escape-dir/o.ipynb"})


@pytest.mark.parametrize(
    "path",
    [
        "../outside.ipynb",
        "sub/../../outside.ipynb",
        "%2e%2e/outside.ipynb",
        "%2e%2e%2foutside.ipynb",
        "%252e%252e%252foutside.ipynb",
        "..%5coutside.ipynb",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "tiny.ipynb%00",
        "escape.ipynb",
    ],
)
def test_notebook_parameters_refuse_traversal(shared_server: ServerProcess, path: str) -> None:
    """Sent byte for byte (http.client does not normalise `..`): 400 or 404, never the file."""
    shutil.copy(shared_server.workspace / "tiny.ipynb", shared_server.workspace.parent / "outside.ipynb")
    outside = shared_server.workspace.parent / "outside-target"
    outside.mkdir(exist_ok=True)
    shutil.copy(shared_server.workspace / "tiny.ipynb", outside / "o.ipynb")
    link = shared_server.workspace / "escape.ipynb"
    if not link.is_symlink():
        link.symlink_to(outside / "o.ipynb")
    connection = http.client.HTTPConnection("127.0.0.1", shared_server.port, timeout=30)
    try:
        connection.request("GET", f"/api/notebooks/{path}/parameters")
        response = connection.getresponse()
        status, body = response.status, response.read()
    finally:
        connection.close()
    assert status in (400, 404), body
    assert b'"parameters"' not in body


def test_notebook_parameters_traversal_through_a_normalising_client(shared_server: ServerProcess) -> None:
    with shared_server.client() as client:
        for path in ("/api/notebooks/../x/parameters", "/api/notebooks/../../etc/passwd/parameters"):
            response = client.get(path)
            assert response.status_code in (400, 404), response.text


# the request body ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"{not json", b'{"notebook": "tiny.ipynb",}', b'{"notebook": "tiny.ipynb"'])
def test_invalid_json_is_400_invalid_json(shared_server: ServerProcess, content: bytes) -> None:
    assert_rejected(shared_server, 400, "invalid_json", content=content)


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        "tiny.ipynb",
        42,
        {},
        {"parameters": {}},
        {"notebook": ""},
        {"notebook": None},
        {"notebook": 5},
        {"notebook": ["tiny.ipynb"]},
        {"notebook": "tiny.ipynb", "parameters": []},
        {"notebook": "tiny.ipynb", "parameters": "x=1"},
        {"notebook": "tiny.ipynb", "kernel_name": ""},
        {"notebook": "x" * 5000},
    ],
)
def test_a_body_that_is_not_a_submission_is_422_invalid_request(shared_server: ServerProcess, body: Any) -> None:
    assert_rejected(shared_server, 422, "invalid_request", body=body)


@pytest.mark.parametrize("content", [b"null", b"[]", b'"tiny.ipynb"', b"42", b"true", b""])
def test_json_that_is_not_an_object_is_422_invalid_request(shared_server: ServerProcess, content: bytes) -> None:
    assert_rejected(shared_server, 422, "invalid_request", content=content)


@pytest.mark.parametrize("extra", [{"zz": 1}, {"Notebook": "tiny.ipynb"}, {"owner": "someone-else"}, {"state": "x"}])
def test_an_unknown_field_is_422(shared_server: ServerProcess, extra: dict[str, Any]) -> None:
    error = assert_rejected(shared_server, 422, "invalid_request", body={"notebook": "tiny.ipynb", **extra})
    assert next(iter(extra)) in error["message"]


# kernels and timeouts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [{"notebook": "unknown_kernel.ipynb"}, {"notebook": "tiny.ipynb", "kernel_name": "nope"}],
)
def test_unknown_kernel_is_422_listing_the_installed_ones(shared_server: ServerProcess, body: dict[str, Any]) -> None:
    error = assert_rejected(shared_server, 422, "unknown_kernel", body=body)
    assert "python3" in error["message"]


@pytest.mark.parametrize("field", ["timeout_s", "cell_timeout_s"])
@pytest.mark.parametrize("value", [0, -1, -0.001])
def test_zero_or_negative_timeout_is_422(shared_server: ServerProcess, field: str, value: float) -> None:
    error = assert_rejected(
        shared_server, 422, {"invalid_request", "invalid_timeout"}, body={"notebook": "tiny.ipynb", field: value}
    )
    assert field in error["message"]


@pytest.mark.parametrize("field", ["timeout_s", "cell_timeout_s"])
@pytest.mark.parametrize("value", [1e12, 7 * 24 * 3600 + 1])
def test_timeout_beyond_the_maximum_is_422_invalid_timeout(
    shared_server: ServerProcess, field: str, value: float
) -> None:
    error = assert_rejected(shared_server, 422, "invalid_timeout", body={"notebook": "tiny.ipynb", field: value})
    assert field in error["message"]


@pytest.mark.parametrize("field", ["timeout_s", "cell_timeout_s"])
@pytest.mark.parametrize("raw", ["Infinity", "NaN"])
def test_non_finite_timeout_is_422(shared_server: ServerProcess, field: str, raw: str) -> None:
    content = f'{{"notebook": "tiny.ipynb", "{field}": {raw}}}'.encode()
    assert_rejected(shared_server, 422, {"invalid_request", "invalid_timeout"}, content=content)


@pytest.mark.parametrize("field", ["timeout_s", "cell_timeout_s"])
def test_a_boolean_timeout_is_422(shared_server: ServerProcess, field: str) -> None:
    error = assert_rejected(shared_server, 422, "invalid_request", body={"notebook": "tiny.ipynb", field: True})
    assert field in error["message"] and "true or false" in error["message"]


# text that is not text: a lone UTF-16 surrogate, valid JSON that no UTF-8 writer can store or show (found from
# outside: a 500 that still created the job, whose row then broke every listing and every push connect)
@pytest.mark.parametrize(
    "body",
    [
        '{"notebook": "params.ipynb", "parameters": {"label": "\\ud800"}}',
        '{"notebook": "params.ipynb", "parameters": {"label": "a\\udfffb"}}',
        '{"notebook": "params.ipynb", "parameters": {"items": [1, {"k\\ud83d": 2}]}}',
        '{"notebook": "tiny.ipynb", "steps": [{"action": "copy", "source": "report", "to": "out/\\ud800.html"}]}',
    ],
)
def test_a_lone_surrogate_is_422_and_creates_nothing(shared_server: ServerProcess, body: str) -> None:
    error = assert_rejected(shared_server, 422, "invalid_request", content=body.encode())
    assert "lone UTF-16 surrogate" in error["message"]
    assert httpx.get(f"{shared_server.url}/api/jobs", timeout=30).status_code == 200


def test_a_surrogate_pair_is_one_character(shared_server: ServerProcess) -> None:
    body = b'{"notebook": "params.ipynb", "parameters": {"label": "smile \\ud83d\\ude00"}}'
    response = post_raw(shared_server, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    job = shared_server.wait_for(response.json()["id"], timeout_s=60)
    assert job["state"] == "succeeded" and job["parameters"]["label"] == "smile \U0001f600", job


def test_a_notebook_holding_a_lone_surrogate_is_422_invalid_notebook(shared_server: ServerProcess) -> None:
    text = (shared_server.workspace / "tiny.ipynb").read_text()
    document = json.loads(text)
    document["cells"][0]["source"] = "x = '\ud800'"
    (shared_server.workspace / "surrogate.ipynb").write_text(json.dumps(document))  # ensure_ascii: "\\ud800"
    error = assert_rejected(shared_server, 422, "invalid_notebook", body={"notebook": "surrogate.ipynb"})
    assert "cells[0].source holds" in error["message"]


# parameters ---------------------------------------------------------------------------------------------------------
def test_parameters_past_their_size_are_413_and_nothing_is_stored(shared_server: ServerProcess) -> None:
    """Found from outside: 900 KB parameters were taken, and each page that connected was sent all of them."""
    big = {"label": "x" * (64 * 1024)}
    error = assert_rejected(
        shared_server, 413, "parameters_too_large", body={"notebook": "params.ipynb", "parameters": big}
    )
    assert error["message"].endswith("bytes as JSON; the limit is 65536") and "file in the workspace" in error["hint"]


def test_unknown_parameter_is_422_naming_the_known_ones(shared_server: ServerProcess) -> None:
    error = assert_rejected(
        shared_server, 422, "invalid_parameters", body={"notebook": "params.ipynb", "parameters": {"nope": 1}}
    )
    assert "nope" in error["message"]
    for name in ("n", "x", "label", "flag", "items", "opts"):
        assert name in error["message"]
    assert [p["parameter"] for p in error["problems"]] == ["nope"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"n": "3"},
        {"n": 3.5},
        {"n": True},
        {"x": "a"},
        {"x": True},
        {"flag": 1},
        {"flag": "true"},
        {"items": {}},
        {"items": "[1, 2]"},
        {"label": 5},
        {"label": None},
        {"opts": []},
    ],
)
def test_wrong_parameter_types_are_422(shared_server: ServerProcess, parameters: dict[str, Any]) -> None:
    error = assert_rejected(
        shared_server, 422, "invalid_parameters", body={"notebook": "params.ipynb", "parameters": parameters}
    )
    name = next(iter(parameters))
    assert f"'{name}'" in error["message"]
    assert [p["parameter"] for p in error["problems"]] == [name]


def test_every_problem_is_listed(shared_server: ServerProcess) -> None:
    body = {"notebook": "params.ipynb", "parameters": {"n": "3", "label": 5, "nope": 1}}
    error = assert_rejected(shared_server, 422, "invalid_parameters", body=body)
    assert sorted(p["parameter"] for p in error["problems"]) == ["label", "n", "nope"]


@pytest.mark.parametrize("raw", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_number_parameters_are_422(shared_server: ServerProcess, raw: str) -> None:
    """JSON has no NaN or infinity; a job whose parameters cannot even be shown back must not be created."""
    content = f'{{"notebook": "params.ipynb", "parameters": {{"x": {raw}}}}}'.encode()
    assert_rejected(shared_server, 422, {"invalid_parameters", "invalid_request", "invalid_json"}, content=content)


def test_parameters_for_a_notebook_without_parameters_are_422(shared_server: ServerProcess) -> None:
    error = assert_rejected(
        shared_server, 422, "invalid_parameters", body={"notebook": "no_params.ipynb", "parameters": {"a": 1}}
    )
    assert "'a'" in error["message"]


def test_an_int_for_a_float_parameter_is_accepted(shared_server: ServerProcess) -> None:
    response = post_raw(shared_server, json={"notebook": "params.ipynb", "parameters": {"x": 2}})
    assert response.status_code == 202, response.text
    job = shared_server.wait_for(response.json()["id"], timeout_s=60)
    assert job["state"] == "succeeded", job
    assert job["parameters"] == {"x": 2}


def test_a_deeply_nested_body_is_refused_without_a_job(shared_server: ServerProcess) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    content = f'{{"notebook": "params.ipynb", "parameters": {{"items": {deep}}}}}'.encode()
    before = total_jobs(shared_server)
    response = post_raw(shared_server, content=content, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
    assert total_jobs(shared_server) == before


# integers the database cannot hold (found from outside: 500 OverflowError from the SQLite driver) ----------------
HUGE = ["9223372036854775808", "2147483648", "99999999999999999999999999", "0", "-1"]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "/api/jobs/{}"),
        ("GET", "/api/jobs/{}/report"),
        ("HEAD", "/api/jobs/{}/report"),
        ("GET", "/api/jobs/{}/notebook"),
        ("POST", "/api/jobs/{}/cancel"),
        ("DELETE", "/api/reports/{}"),
        ("GET", "/api/jobs?offset={}"),
        ("GET", "/api/reports?offset={}"),
    ],
)
def test_integers_out_of_range_are_422_or_404_never_500(
    shared_server: ServerProcess, method: str, route: str, value: str
) -> None:
    if value in ("0",) and "offset" in route:
        return  # offset 0 is simply the first page
    response = httpx.request(method, shared_server.url + route.format(value), timeout=30)
    assert response.status_code in (404, 422), response.text
    if method != "HEAD":
        assert response.json()["error"]["message"]
    assert "OverflowError" not in shared_server.log() and "Traceback" not in shared_server.log()


def test_head_of_a_report_answers_like_get_without_a_body(shared_server: ServerProcess) -> None:
    response = post_raw(shared_server, json={"notebook": "tiny.ipynb"})
    job = shared_server.wait_for(response.json()["id"], timeout_s=90)
    get = httpx.get(shared_server.url + job["report_url"], timeout=30)
    head = httpx.head(shared_server.url + job["report_url"], timeout=30)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]
