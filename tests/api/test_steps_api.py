"""Post-run file steps through a real `nbrelay serve`: given with the job or by the notebook's metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.client import Client
from tests.conftest import NOTEBOOKS, ServerProcess

pytestmark = pytest.mark.kernel


def post_job(server: ServerProcess, body: dict[str, Any]) -> httpx.Response:
    with server.client() as client:
        return client.post("/api/jobs", json=body)


def run_job(server: ServerProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = post_job(server, body)
    assert response.status_code == 202, response.text
    return server.wait_for(response.json()["id"], timeout_s=90)


def report_text(server: ServerProcess, job_id: int) -> str:
    with server.client() as client:
        response = client.get(f"/api/jobs/{job_id}/report")
    assert response.status_code == 200, response.text
    return response.text


def total_jobs(server: ServerProcess) -> int:
    with server.client() as client:
        return int(client.get("/api/jobs").json()["total"])


def test_copy_the_report_into_the_workspace(server_factory: Any, workspace: Path) -> None:
    server: ServerProcess = server_factory()
    step = {"action": "copy", "source": "report", "to": "publish/{notebook}-{job}.html"}
    job = run_job(server, {"notebook": "tiny.ipynb", "steps": [step]})

    assert job["state"] == "succeeded", job
    published = f"publish/tiny-{job['id']}.html"
    assert job["steps"] == [{**step, "when": "success", "overwrite": False}]
    assert job["step_results"] == [
        {"step": 0, **{k: step[k] for k in ("action", "source", "to")}, "status": "done", "files": [published]}
    ]
    assert (workspace / published).read_text() == report_text(server, job["id"])
    assert not [p for p in (workspace / "publish").iterdir() if p.name.endswith(".tmp")]


def test_a_step_may_name_a_parameter_left_at_its_default(server_factory: Any, workspace: Path) -> None:
    """Found from outside: a notebook whose steps named one of its own parameters could not be run with its
    defaults ("unknown field {region}"). A parameter not given is the notebook's default, written into the step."""
    server: ServerProcess = server_factory()
    step = {"action": "copy", "source": "report", "to": "publish/{notebook}-{x}-{{x}}.html"}  # tiny.ipynb: x = 1
    default, given = (
        run_job(server, {"notebook": "tiny.ipynb", "steps": [step]}),
        run_job(server, {"notebook": "tiny.ipynb", "parameters": {"x": 5}, "steps": [step]}),
    )
    assert default["state"] == given["state"] == "succeeded"
    assert default["steps"][0]["to"] == "publish/{notebook}-1-{{x}}.html"  # the default, fixed at the submit
    assert (workspace / "publish" / "tiny-1-{x}.html").is_file()
    assert (workspace / "publish" / "tiny-5-{x}.html").is_file()


def test_a_failing_step_leaves_the_job_succeeded(server_factory: Any, workspace: Path) -> None:
    server: ServerProcess = server_factory()
    (workspace / "publish").mkdir()
    (workspace / "publish" / "params.html").write_text("old")
    steps = [
        {"action": "copy", "source": "report", "to": "publish/{notebook}.html"},  # exists
        {"action": "copy", "source": "report", "to": "{label}/{label}/escaped.html"},  # label ".." leaves
        {"action": "copy", "source": "notebook", "to": "publish/{label}-{date}/"},
    ]
    job = run_job(server, {"notebook": "params.ipynb", "parameters": {"label": ".."}, "steps": steps})

    assert job["state"] == "succeeded", job
    assert job["error"] is None
    results = job["step_results"]
    assert [r["status"] for r in results] == ["failed", "failed", "done"], results
    assert "publish/params.html exists" in results[0]["error"]
    assert "'..' is not allowed" in results[1]["error"]
    assert (workspace / "publish" / "params.html").read_text() == "old"
    assert not (workspace.parent.parent / "escaped.html").exists()
    [copied] = results[2]["files"]
    assert copied.startswith("publish/..-") and copied.endswith("/params.ipynb")
    assert json.loads((workspace / copied).read_text())["cells"]


def test_steps_from_the_notebook_metadata(server_factory: Any, workspace: Path) -> None:
    server: ServerProcess = server_factory()
    nb = json.loads((NOTEBOOKS / "tiny.ipynb").read_text())
    nb["metadata"]["nbrelay"] = {
        "steps": [
            {"action": "copy", "source": "report", "to": "{notebook_dir}/out/{notebook}-{job}.html"},
            {"action": "delete", "source": "jobs/scratch/*.tmp", "when": "always"},
        ]
    }
    (workspace / "jobs" / "scratch").mkdir(parents=True)
    (workspace / "jobs" / "meta.ipynb").write_text(json.dumps(nb))
    (workspace / "jobs" / "scratch" / "a.tmp").write_text("x")
    (workspace / "jobs" / "scratch" / "keep.txt").write_text("x")

    job = run_job(server, {"notebook": "jobs/meta.ipynb"})
    assert job["state"] == "succeeded", job
    out = f"jobs/out/meta-{job['id']}.html"
    assert [r["status"] for r in job["step_results"]] == ["done", "done"], job["step_results"]
    assert job["step_results"][0]["files"] == [out]
    assert job["step_results"][1]["files"] == ["jobs/scratch/a.tmp"]
    assert (workspace / out).read_text() == report_text(server, job["id"])
    assert not (workspace / "jobs" / "scratch" / "a.tmp").exists()
    assert (workspace / "jobs" / "scratch" / "keep.txt").exists()

    # "steps": [] turns the notebook's steps off; null (like no key) keeps them.
    off = run_job(server, {"notebook": "jobs/meta.ipynb", "steps": []})
    assert off["state"] == "succeeded", off
    assert off["steps"] == []
    assert off["step_results"] is None
    assert not (workspace / f"jobs/out/meta-{off['id']}.html").exists()
    on = run_job(server, {"notebook": "jobs/meta.ipynb", "steps": None})
    assert (workspace / f"jobs/out/meta-{on['id']}.html").exists()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"action": "zap", "source": "report", "to": "x.html"}], "steps[0]: unknown action 'zap'"),
        ([{"action": "copy", "source": "report"}], "steps[0]: copy needs 'to'"),
        ([{"action": "delete", "source": "*.csv", "to": "x"}], "steps[0]: delete takes no 'to'"),
        ([{"action": "move", "source": "report", "to": "x.html"}], "the job's report cannot be moved"),
        ([{"action": "copy", "source": "report", "to": "{nope}.html"}], "unknown field {nope}"),
        ([{"action": "delete", "source": "../*.csv"}], "'..' is not allowed"),
        ([{"action": "delete", "source": "a.tmp"}] * 21, "at most 20"),
    ],
)
def test_invalid_steps_answer_422(shared_server: ServerProcess, steps: list[dict[str, Any]], message: str) -> None:
    before = total_jobs(shared_server)
    response = post_job(shared_server, {"notebook": "tiny.ipynb", "steps": steps})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_steps"
    assert message in error["message"]
    assert total_jobs(shared_server) == before


def test_invalid_notebook_metadata_steps_answer_422(server_factory: Any, workspace: Path) -> None:
    server: ServerProcess = server_factory()
    nb = json.loads((NOTEBOOKS / "tiny.ipynb").read_text())
    nb["metadata"]["nbrelay"] = {"steps": [{"action": "copy", "source": "report", "to": "/srv/x.html"}]}
    (workspace / "bad-steps.ipynb").write_text(json.dumps(nb))
    response = post_job(server, {"notebook": "bad-steps.ipynb"})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_steps"
    assert error["message"].startswith("bad-steps.ipynb metadata.nbrelay.steps[0]: to")
    assert "absolute paths are not accepted" in error["message"]
    # The request's own steps replace the broken defaults.
    response = post_job(server, {"notebook": "bad-steps.ipynb", "steps": []})
    assert response.status_code == 202, response.text
    assert server.wait_for(response.json()["id"], timeout_s=90)["state"] == "succeeded"


def test_what_the_steps_change_is_announced_as_any_change(server_factory: Any, workspace: Path) -> None:
    """Every change to the workspace publishes a file.changed event, also a post-run step's (found from outside:
    a report published to shared/ showed on no one's page until a reload)."""
    server: ServerProcess = server_factory()
    (workspace / "inbox").mkdir()
    (workspace / "inbox" / "a.csv").write_text("a")
    (workspace / "inbox" / "old.txt").write_text("old")
    steps = [
        {"action": "copy", "source": "report", "to": "publish/{notebook}-{job}.html"},
        {"action": "move", "source": "inbox/a.csv", "to": "done/"},
        {"action": "delete", "source": "inbox/old.txt"},
    ]
    seen: list[dict[str, Any]] = []
    submitted: list[int] = []

    def submit() -> None:
        if not submitted:
            submitted.append(post_job(server, {"notebook": "tiny.ipynb", "steps": steps}).json()["id"])

    with Client(server.url) as client:
        for event in client.events(["user:local"], on_subscribed=submit):
            if event.get("type") == "file.changed":
                seen.append(event["data"])
            if event.get("type") == "job.succeeded" and event["data"]["job"] == submitted[0]:
                break
    assert seen == [
        {"path": f"publish/tiny-{submitted[0]}.html", "action": "created", "type": "file"},
        {"path": "done/a.csv", "action": "moved", "type": "file", "from": "inbox/a.csv"},
        {"path": "inbox/old.txt", "action": "deleted", "type": "file"},
    ]
