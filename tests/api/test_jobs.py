"""Jobs over HTTP against a real `nbrelay serve`: submit, follow, read results, list, cancel, queue order."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import nbformat
import psutil
import pytest

from tests.conftest import NOTEBOOKS, ServerProcess, kernel_pids

pytestmark = pytest.mark.kernel

PARAMS = {
    "n": 3,
    "x": 2.25,
    "label": "zz-unique-label",
    "flag": True,
    "items": [1, "two", None],
    "opts": {"k": [1, 2], "nested": {"deep": False}},
}


# helpers ------------------------------------------------------------------------------------------------------------
def assert_report_policy(policy: str) -> None:
    """Sandboxed without same-origin (links may open tabs), and nothing loaded from anywhere."""
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["sandbox"].split() == ["allow-scripts", "allow-popups", "allow-popups-to-escape-sandbox"]
    assert directives["default-src"] == "'none'" and "http" not in policy


def submit(server: ServerProcess, notebook: str, parameters: dict[str, Any] | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"notebook": notebook, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    with server.client() as client:
        response = client.post("/api/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def get_job(server: ServerProcess, job_id: int) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def cancel(server: ServerProcess, job_id: int) -> httpx.Response:
    with server.client() as client:
        return client.post(f"/api/jobs/{job_id}/cancel")


def list_jobs(server: ServerProcess, **params: Any) -> dict[str, Any]:
    with server.client() as client:
        response = client.get("/api/jobs", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def cancel_and_wait(server: ServerProcess, *job_ids: int) -> None:
    """Clean-up: no job of this test may keep a worker busy for the next one."""
    for job_id in job_ids:
        cancel(server, job_id)
    for job_id in job_ids:
        server.wait_for(job_id, timeout_s=60)


def server_kernels(server: ServerProcess) -> set[int]:
    """Kernel processes of this server only (other servers, of other tests, may run on the machine)."""
    assert server.process is not None
    try:
        descendants = {p.pid for p in psutil.Process(server.process.pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()
    return kernel_pids() & descendants


def settled_kernels(server: ServerProcess, *, quiet_s: float = 1.5, timeout_s: float = 60) -> set[int]:
    """The server's kernels once the set has stopped changing for `quiet_s` (warm pools refill in the background)."""
    deadline = time.monotonic() + timeout_s
    last = server_kernels(server)
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = server_kernels(server)
        if now != last:
            last, since = now, time.monotonic()
        elif last and time.monotonic() - since >= quiet_s:
            return last
    return last


# fixtures -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def single_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with one worker, so that jobs queue behind each other."""
    root = tmp_path_factory.mktemp("single-worker")
    folder = root / "workspace"
    shutil.copytree(NOTEBOOKS, folder)
    server = ServerProcess(workspace=folder, data_dir=root / "data", workers=1).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def params_job(shared_server: ServerProcess) -> dict[str, Any]:
    """A params.ipynb job with typed parameters: the POST answer, its headers, and the finished job."""
    with shared_server.client() as client:
        response = client.post("/api/jobs", json={"notebook": "params.ipynb", "parameters": PARAMS})
    assert response.status_code == 202, response.text
    created = response.json()
    final = shared_server.wait_for(created["id"], timeout_s=60)
    return {"status": response.status_code, "headers": response.headers, "created": created, "final": final}


@pytest.fixture(scope="module")
def failed_job(shared_server: ServerProcess) -> dict[str, Any]:
    created = submit(shared_server, "fail.ipynb")
    return shared_server.wait_for(created["id"], timeout_s=60)


# submit and follow --------------------------------------------------------------------------------------------------
def test_submit_answers_202_with_location_and_the_queued_job(
    shared_server: ServerProcess, params_job: dict[str, Any]
) -> None:
    created = params_job["created"]
    assert params_job["status"] == 202
    assert params_job["headers"]["location"] == f"/api/jobs/{created['id']}"
    assert created["state"] == "queued"  # the answer is the job as stored; a worker takes it afterwards
    assert created["notebook"] == "params.ipynb"
    assert created["kernel_name"] == "python3"
    assert created["parameters"] == PARAMS
    assert created["created_at"] == params_job["final"]["created_at"]
    assert created["started_at"] is None and created["finished_at"] is None
    assert created["error"] is None
    assert created["report_url"] is None
    # The Location header leads to the same job.
    with shared_server.client() as client:
        located = client.get(params_job["headers"]["location"])
    assert located.status_code == 200
    assert located.json()["id"] == created["id"]


def test_job_succeeds_with_progress_times_and_links(params_job: dict[str, Any]) -> None:
    job = params_job["final"]
    assert job["state"] == "succeeded", job
    assert job["parameters"] == PARAMS
    # Two code cells of its own and the injected parameters cell, all done.
    assert job["progress"] == {"cell": 3, "total": 3, "phase": None}
    created, started, finished = (datetime.fromisoformat(job[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started < finished
    assert job["duration_s"] == pytest.approx((finished - started).total_seconds(), abs=0.002)
    assert job["error"] is None
    assert job["queue_position"] is None
    assert job["cancel_requested"] is False
    assert job["report_url"] == f"/api/jobs/{job['id']}/report"
    assert job["notebook_url"] == f"/api/jobs/{job['id']}/notebook"


def test_report_is_sandboxed_html_with_the_injected_values(
    shared_server: ServerProcess, params_job: dict[str, Any]
) -> None:
    job = params_job["final"]
    with shared_server.client() as client:
        response = client.get(job["report_url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert_report_policy(response.headers["content-security-policy"])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "zz-unique-label" in response.text
    assert "<html" in response.text.lower()


def test_executed_notebook_is_valid_ipynb_with_the_injected_parameters_cell(
    shared_server: ServerProcess, params_job: dict[str, Any]
) -> None:
    job = params_job["final"]
    with shared_server.client() as client:
        response = client.get(job["notebook_url"])
    assert response.status_code == 200
    nb = nbformat.reads(response.text, as_version=4)
    nbformat.validate(nb)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    source = injected[0].source
    assert "n = 3" in source
    assert 'label = "zz-unique-label"' in source
    assert "flag = True" in source
    # The injected cell comes right after the notebook's own parameters cell.
    index = nb.cells.index(injected[0])
    assert "parameters" in nb.cells[index - 1].metadata.get("tags", [])
    outputs = "".join("".join(o.get("text", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "n=3 x=2.25 label=zz-unique-label flag=True" in outputs


def test_string_parameters_reach_the_kernel_verbatim(shared_server: ServerProcess) -> None:
    """Quotes, backslashes, newlines and braces are data, never code."""
    nasty = "a\"b'c\\n\nd \"\"\" ''' {x} ${HOME} `id` \u2028 é end"
    opts = {"k'\"\n": [1, None, True]}
    created = submit(shared_server, "params.ipynb", {"label": nasty, "opts": opts})
    job = shared_server.wait_for(created["id"], timeout_s=60)
    assert job["state"] == "succeeded", job
    assert job["parameters"] == {"label": nasty, "opts": opts}
    with shared_server.client() as client:
        nb = client.get(job["notebook_url"]).json()
    outputs = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert f"label={nasty} " in outputs
    assert repr(opts) in outputs


def test_int_is_accepted_for_a_float_parameter(shared_server: ServerProcess) -> None:
    created = submit(shared_server, "params.ipynb", {"x": 2})
    assert created["parameters"] == {"x": 2}
    assert shared_server.wait_for(created["id"], timeout_s=60)["state"] == "succeeded"


# failure ------------------------------------------------------------------------------------------------------------
def test_failed_job_names_the_cell_and_the_exception(failed_job: dict[str, Any]) -> None:
    assert failed_job["state"] == "failed", failed_job
    error = failed_job["error"]
    assert error["cell"] == 2 and error["reason"] == "cell 2 raised ValueError"  # as people count: the second cell
    assert error["ename"] == "ValueError"
    assert "boom" in error["evalue"]
    assert any("boom" in line for line in error["traceback"])
    assert failed_job["started_at"] <= failed_job["finished_at"]


def test_failed_job_keeps_a_partial_report(shared_server: ServerProcess, failed_job: dict[str, Any]) -> None:
    assert failed_job["report_url"] == f"/api/jobs/{failed_job['id']}/report"
    with shared_server.client() as client:
        response = client.get(failed_job["report_url"])
        executed = client.get(failed_job["notebook_url"])
    assert response.status_code == 200
    assert_report_policy(response.headers["content-security-policy"])
    assert "boom" in response.text
    assert "before" in response.text  # the cell before the failure ran and shows its output
    assert executed.status_code == 200
    nb = nbformat.reads(executed.text, as_version=4)
    assert nb.cells[0].metadata.tags == ["nbrelay-run-ended"]  # what happened, first
    assert nb.cells[3].get("outputs", []) == []  # the cell after the failure never ran


# listing ------------------------------------------------------------------------------------------------------------
def test_list_by_state(shared_server: ServerProcess, params_job: dict[str, Any], failed_job: dict[str, Any]) -> None:
    sleeper = submit(shared_server, "sleep.ipynb", {"seconds": 30})
    try:
        shared_server.wait_for(sleeper["id"], states=("running",), timeout_s=60)

        # The module's other jobs have ended (their tests wait for that): the sleeper is the one unfinished.
        unfinished = list_jobs(shared_server, state="unfinished")
        assert [(j["id"], j["state"]) for j in unfinished["jobs"]] == [(sleeper["id"], "running")]
        assert unfinished["total"] == 1

        finished = list_jobs(shared_server, state="succeeded,failed", limit=500)
        ids = [j["id"] for j in finished["jobs"]]
        assert params_job["final"]["id"] in ids
        assert failed_job["id"] in ids
        assert sleeper["id"] not in ids
        assert {j["state"] for j in finished["jobs"]} <= {"succeeded", "failed"}
        assert finished["total"] == len(finished["jobs"])

        running = list_jobs(shared_server, state="running")
        assert [j["id"] for j in running["jobs"]] == [sleeper["id"]]
        others = list_jobs(shared_server, state="cancelled,timed_out")
        everything = list_jobs(shared_server, limit=500)
        assert everything["total"] == unfinished["total"] + finished["total"] + others["total"]
    finally:
        cancel_and_wait(shared_server, sleeper["id"])


def test_list_filters_by_notebook_and_pages_newest_first(shared_server: ServerProcess) -> None:
    name = f"paging-{uuid.uuid4().hex[:8]}.ipynb"
    shutil.copy(shared_server.workspace / "tiny.ipynb", shared_server.workspace / name)
    ids = [submit(shared_server, name)["id"] for _ in range(5)]
    for job_id in ids:
        shared_server.wait_for(job_id, timeout_s=60)

    newest_first = sorted(ids, reverse=True)
    pages = []
    for offset in (0, 2, 4):
        page = list_jobs(shared_server, notebook=name, limit=2, offset=offset)
        assert page["total"] == 5
        assert page["limit"] == 2 and page["offset"] == offset
        assert all(j["notebook"] == name for j in page["jobs"])
        pages.append([j["id"] for j in page["jobs"]])
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]

    beyond = list_jobs(shared_server, notebook=name, limit=2, offset=10)
    assert beyond["jobs"] == [] and beyond["total"] == 5
    assert list_jobs(shared_server, notebook="no-such-notebook.ipynb")["total"] == 0
    assert list_jobs(shared_server, notebook=name, state="failed")["total"] == 0


@pytest.mark.parametrize("state", ["bogus", "succeeded,bogus", "SUCCEEDED"])
def test_list_with_an_unknown_state_is_422(shared_server: ServerProcess, state: str) -> None:
    """Well-formed but wrong, as every other query value that is no valid value (a 400 until found from outside)."""
    with shared_server.client() as client:
        response = client.get("/api/jobs", params={"state": state})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_state"
    assert "unfinished" in error["message"]


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}])
def test_list_with_bad_paging_is_422(shared_server: ServerProcess, query: dict[str, Any]) -> None:
    with shared_server.client() as client:
        response = client.get("/api/jobs", params=query)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


# missing jobs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs/999999"),
        ("POST", "/api/jobs/999999/cancel"),
        ("GET", "/api/jobs/999999/report"),
        ("GET", "/api/jobs/999999/notebook"),
    ],
)
def test_unknown_job_is_404_job_not_found(shared_server: ServerProcess, method: str, path: str) -> None:
    with shared_server.client() as client:
        response = client.request(method, path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job_not_found"


def test_cancelling_a_finished_job_changes_nothing(shared_server: ServerProcess, params_job: dict[str, Any]) -> None:
    job_id = params_job["final"]["id"]
    response = cancel(shared_server, job_id)
    assert response.status_code == 202  # accepted, and nothing to do: the answer is the job as it ended
    assert response.json()["state"] == "succeeded" and response.json()["cancel_requested"] is False
    after = get_job(shared_server, job_id)
    assert after["state"] == "succeeded"
    assert after["finished_at"] == params_job["final"]["finished_at"]
    assert after["error"] is None


# queue and cancel (one worker) --------------------------------------------------------------------------------------
def test_queue_positions_are_fifo_and_a_queued_job_cancels_at_once(single_worker: ServerProcess) -> None:
    blocker = submit(single_worker, "sleep.ipynb", {"seconds": 30})
    queued: list[int] = []
    try:
        single_worker.wait_for(blocker["id"], states=("running",), timeout_s=60)
        answers = [submit(single_worker, "tiny.ipynb") for _ in range(3)]
        queued = [a["id"] for a in answers]
        assert [a["state"] for a in answers] == ["queued"] * 3
        assert [a["queue_position"] for a in answers] == [1, 2, 3]
        assert [get_job(single_worker, i)["queue_position"] for i in queued] == [1, 2, 3]
        listed = {j["id"]: j["queue_position"] for j in list_jobs(single_worker, state="queued")["jobs"]}
        assert listed == dict(zip(queued, [1, 2, 3], strict=True))
        assert get_job(single_worker, blocker["id"])["queue_position"] is None

        # Nothing to read yet for a queued job.
        with single_worker.client() as client:
            report = client.get(f"/api/jobs/{queued[0]}/report")
            executed = client.get(f"/api/jobs/{queued[0]}/notebook")
        assert report.status_code == 404
        assert report.json()["error"]["code"] == "report_not_ready"
        assert executed.status_code == 404

        # Cancel the middle one while it waits: cancelled at once, and the others move up.
        response = cancel(single_worker, queued[1])
        assert response.status_code == 202
        cancelled = response.json()
        assert cancelled["state"] == "cancelled"
        assert cancelled["started_at"] is None
        assert cancelled["queue_position"] is None
        assert get_job(single_worker, queued[1])["state"] == "cancelled"
        assert [get_job(single_worker, i)["queue_position"] for i in (queued[0], queued[2])] == [1, 2]
        with single_worker.client() as client:
            gone = client.get(f"/api/jobs/{queued[1]}/report")
            unrun = client.get(f"/api/jobs/{queued[1]}/notebook")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_report"
        assert (
            unrun.json()["error"]["message"]
            == f"job {queued[1]} ended (cancelled) before it ran: it has no executed notebook"
        )
    finally:
        cancel_and_wait(single_worker, blocker["id"])

    first, last = (single_worker.wait_for(i, timeout_s=60) for i in (queued[0], queued[2]))
    assert first["state"] == last["state"] == "succeeded"
    assert first["started_at"] <= last["started_at"]  # FIFO
    never = get_job(single_worker, queued[1])
    assert never["state"] == "cancelled"
    assert never["started_at"] is None
    assert never["duration_s"] is None
    assert never["report_url"] is None


def test_cancelling_a_running_job_stops_it_and_its_kernel(single_worker: ServerProcess) -> None:
    warm = settled_kernels(single_worker)  # the idle server's warm pool
    assert warm, "the server should keep a warm kernel"
    job = submit(single_worker, "sleep.ipynb", {"seconds": 30})
    try:
        running = single_worker.wait_for(job["id"], states=("running",), timeout_s=60)
        assert running["created_at"] <= running["started_at"] and running["finished_at"] is None
        time.sleep(0.5)  # into the sleeping cell
        while_running = server_kernels(single_worker)

        started = time.monotonic()
        response = cancel(single_worker, job["id"])
        assert response.status_code == 202
        assert response.json()["cancel_requested"] is True
        final = single_worker.wait_for(job["id"], timeout_s=10)
        assert final["state"] == "cancelled", final
        assert time.monotonic() - started < 10
        assert final["cancel_requested"] is True
        assert final["error"]["reason"] == "cancelled by request"
        assert running["started_at"] < final["finished_at"]
    finally:
        cancel_and_wait(single_worker, job["id"])

    deadline = time.monotonic() + 15
    after = server_kernels(single_worker)
    while time.monotonic() < deadline and (len(after) > len(warm) or not (while_running - after)):
        time.sleep(0.2)
        after = server_kernels(single_worker)
    assert len(after) <= len(warm), f"kernels before {warm}, while running {while_running}, after {after}"
    assert while_running - after, "the cancelled job's kernel should have exited"


def test_cancel_is_idempotent(single_worker: ServerProcess) -> None:
    job = submit(single_worker, "sleep.ipynb", {"seconds": 30})
    single_worker.wait_for(job["id"], states=("running",), timeout_s=60)
    first = cancel(single_worker, job["id"])
    second = cancel(single_worker, job["id"])
    assert (first.status_code, first.json()["cancel_requested"]) == (202, True)
    assert (second.status_code, second.json()["cancel_requested"]) == (202, True)
    final = single_worker.wait_for(job["id"], timeout_s=10)
    assert final["state"] == "cancelled"
    third = cancel(single_worker, job["id"])
    assert third.status_code == 202 and third.json() == final
    assert get_job(single_worker, job["id"])["state"] == "cancelled"


def test_a_cancelled_running_job_keeps_the_report_of_what_ran(single_worker: ServerProcess) -> None:
    """Its links point at what it left: the report and the notebook, as far as the cells ran."""
    job = submit(single_worker, "sleep.ipynb", {"seconds": 30})
    single_worker.wait_for(job["id"], states=("running",), timeout_s=60)
    deadline = time.monotonic() + 30  # in `time.sleep(seconds)`: four of its six code cells are done
    while get_job(single_worker, job["id"])["progress"]["cell"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel(single_worker, job["id"])
    final = single_worker.wait_for(job["id"], timeout_s=10)
    assert final["state"] == "cancelled" and final["error"]["cell"] == 5, final
    assert (final["report_url"], final["notebook_url"]) == (
        f"/api/jobs/{job['id']}/report",
        f"/api/jobs/{job['id']}/notebook",
    )
    with single_worker.client() as client:
        report, executed = client.get(final["report_url"]), client.get(final["notebook_url"])
    assert report.status_code == executed.status_code == 200
