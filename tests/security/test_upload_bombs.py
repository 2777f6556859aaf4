"""Upload bombs against `nbrelay serve` in a process of its own (so its memory is its own to measure): bodies over
the caps are refused with 413 and leave nothing in the workspace, not even a temporary file; JSON nested too
deeply is refused; a notebook of a million tiny cells is refused with 422 too_many_cells, uploaded or submitted,
and the server's memory is measured around it from /proc/<pid>/status.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NOTEBOOKS, ServerProcess

UPLOAD_CAP = 48 * 1024 * 1024  # NBRELAY_MAX_UPLOAD_BYTES here: a million tiny cells (46 MB) fit under it
BODY_CAP = 1024 * 1024  # NBRELAY_MAX_BODY_BYTES, the default
CELL_CAP = 5_000  # NBRELAY_MAX_NOTEBOOK_CELLS here (default 10,000): the setting reaches uploads and submissions
MILLION = 1_000_000
RSS_BOUND_MB = 150  # what the server may keep after refusing the million cells


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("bombs")
    shutil.copytree(NOTEBOOKS, root / "workspace")
    env = {
        "NBRELAY_MAX_UPLOAD_BYTES": str(UPLOAD_CAP),
        "NBRELAY_MAX_NOTEBOOK_CELLS": str(CELL_CAP),
        "NBRELAY_KERNEL_POOL_SIZE": "0",
    }
    started = ServerProcess(workspace=root / "workspace", data_dir=root / "data", workers=1, env=env).start()
    yield started
    started.stop()
    assert "Traceback" not in started.log(), started.log()[-3000:]


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def workspace_files(server: ServerProcess) -> set[str]:
    return {str(p.relative_to(server.workspace)) for p in server.workspace.rglob("*")}


@pytest.fixture
def nothing_left(server: ServerProcess) -> Iterator[None]:
    """The test's refusals leave the workspace as it was: no file, no partial or temporary one."""
    before = workspace_files(server)
    yield
    assert workspace_files(server) == before


def memory_mb(server: ServerProcess) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak so far) of the server process, in MiB."""
    assert server.process is not None
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def error_of(answer: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


def tiny_cells(count: int) -> bytes:
    """A valid nbformat 4.4 notebook of `count` empty raw cells (45 bytes each)."""
    cells = ",".join(['{"cell_type":"raw","metadata":{},"source":""}'] * count)
    return f'{{"nbformat":4,"nbformat_minor":4,"metadata":{{}},"cells":[{cells}]}}'.encode()


# over the caps ------------------------------------------------------------------------------------------------------
def test_a_raw_upload_over_the_cap_is_413_and_leaves_nothing(http: httpx.Client, nothing_left: None) -> None:
    answer = http.put("/api/contents/bomb.bin", content=b"x" * (UPLOAD_CAP + 1))
    assert answer.status_code == 413
    assert error_of(answer)["message"] == f"the upload is {UPLOAD_CAP + 1} bytes; the limit is {UPLOAD_CAP}"


def test_a_chunked_upload_over_the_cap_is_413_and_leaves_nothing(http: httpx.Client, nothing_left: None) -> None:
    """No Content-Length: the server counts as the bytes come, and removes what it had written."""
    chunk = b"x" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(UPLOAD_CAP // len(chunk) + 1):
            yield chunk

    answer = http.put("/api/contents/bomb.bin", content=body())
    assert answer.status_code == 413
    assert error_of(answer)["message"] == f"the upload is over the limit of {UPLOAD_CAP} bytes"


def test_a_multipart_upload_over_the_cap_is_413_and_leaves_nothing(http: httpx.Client, nothing_left: None) -> None:
    answer = http.put("/api/contents/bomb.bin", files={"file": ("bomb.bin", b"x" * (UPLOAD_CAP + 1))})
    assert answer.status_code == 413
    assert str(UPLOAD_CAP) in error_of(answer)["message"]


def test_a_json_model_over_the_cap_is_413_and_leaves_nothing(http: httpx.Client, nothing_left: None) -> None:
    content = base64.b64encode(b"x" * (UPLOAD_CAP + 1)).decode()
    answer = http.put("/api/contents/bomb.bin", json={"type": "file", "format": "base64", "content": content})
    assert answer.status_code == 413
    assert str(UPLOAD_CAP) in error_of(answer)["message"]


def test_a_job_body_over_the_body_cap_is_413(http: httpx.Client, nothing_left: None) -> None:
    body = json.dumps({"notebook": "tiny.ipynb", "parameters": {"x": "y" * BODY_CAP}})
    answer = http.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert error_of(answer)["hint"] == "NBRELAY_MAX_BODY_BYTES sets it"


# nested too deeply ---------------------------------------------------------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000


def test_a_deeply_nested_notebook_upload_is_422_and_leaves_nothing(http: httpx.Client, nothing_left: None) -> None:
    notebook = f'{{"nbformat": 4, "nbformat_minor": 4, "metadata": {{"x": {DEEP}}}, "cells": []}}'
    answer = http.put("/api/contents/deep.ipynb", content=notebook.encode())
    assert answer.status_code == 422 and error_of(answer)["code"] == "invalid_notebook", answer.text


def test_a_deeply_nested_json_body_is_400_invalid_json(http: httpx.Client, nothing_left: None) -> None:
    for method, url in (("POST", "/api/jobs"), ("PUT", "/api/contents/deep.ipynb"), ("POST", "/api/schedules")):
        body = f'{{"notebook": "tiny.ipynb", "parameters": {{"x": {DEEP}}}}}'
        answer = http.request(method, url, content=body.encode(), headers={"content-type": "application/json"})
        assert answer.status_code == 400 and error_of(answer)["code"] == "invalid_json", (url, answer.text)
        assert "nested" in error_of(answer)["message"]


# a million cells ----------------------------------------------------------------------------------------------------
def test_a_million_cells_are_refused_uploaded_or_submitted_in_bounded_memory(
    server: ServerProcess, http: httpx.Client, nothing_left: None
) -> None:
    notebook = tiny_cells(MILLION)
    assert len(notebook) < UPLOAD_CAP  # refused for its cells, not its size
    before = memory_mb(server)
    answer = http.put("/api/contents/million.ipynb", content=notebook)
    assert answer.status_code == 422, answer.text
    assert error_of(answer) == {
        "code": "too_many_cells",
        "message": f"million.ipynb has {MILLION:,} cells; the limit is {CELL_CAP:,}",
        "hint": "NBRELAY_MAX_NOTEBOOK_CELLS sets the limit",
    }
    # A notebook that arrived another way (a copy into the workspace): its submission is refused alike.
    placed = server.workspace / "placed-million.ipynb"
    placed.write_bytes(notebook)
    try:
        answer = http.post("/api/jobs", json={"notebook": "placed-million.ipynb"})
        assert answer.status_code == 422, answer.text
        assert error_of(answer)["message"] == f"placed-million.ipynb has {MILLION:,} cells; the limit is {CELL_CAP:,}"
    finally:
        os.unlink(placed)
    after = memory_mb(server)
    print(
        f"\nserver RSS {before['VmRSS']:.0f} MiB before, {after['VmRSS']:.0f} MiB after; "
        f"peak {before['VmHWM']:.0f} -> {after['VmHWM']:.0f} MiB (a {len(notebook) / 1e6:.0f} MB notebook)"
    )
    assert after["VmRSS"] - before["VmRSS"] < RSS_BOUND_MB, (before, after)
    assert http.get("/api/health").status_code == 200


def test_cells_written_with_escapes_are_counted_too(http: httpx.Client, nothing_left: None) -> None:
    """The count before parsing looks for "cell_type" as writers put it; the parsed count is what decides."""
    escaped = tiny_cells(CELL_CAP + 1).replace(b'"cell_type"', b'"\\u0063ell_type"')
    answer = http.put("/api/contents/escaped.ipynb", content=escaped)
    assert answer.status_code == 422, answer.text
    assert error_of(answer)["message"] == f"escaped.ipynb has {CELL_CAP + 1:,} cells; the limit is {CELL_CAP:,}"


def test_a_notebook_at_the_cell_limit_is_taken(http: httpx.Client) -> None:
    answer = http.put("/api/contents/at-limit.ipynb", content=tiny_cells(CELL_CAP))
    assert answer.status_code == 201, answer.text
    # Read as a job would read it (the same reader, without running them all here).
    parameters = http.get("/api/notebooks/at-limit.ipynb/parameters")
    assert parameters.status_code == 200, parameters.text
