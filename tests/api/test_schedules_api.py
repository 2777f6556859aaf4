"""Schedules over HTTP against a real in-process server (auth mode token): create with next runs, refusals that
name the field, change, pause and resume, run now, the schedule's jobs, per-user isolation, the schedule.* events
on the owner's stream, and the OpenAPI document (a restart keeping schedules: tests/schedules/test_scheduler.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import NOTEBOOKS
from tests.live import LiveServer, bearer, make_token

BERLIN = ZoneInfo("Europe/Berlin")
DAILY = {"notebook": "params.ipynb", "cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("schedules")
    workspace = root / "workspace"
    for user in ("alice", "bob"):
        (workspace / "users" / user).mkdir(parents=True)
        for name in ("params.ipynb", "tiny.ipynb"):
            (workspace / "users" / user / name).write_bytes((NOTEBOOKS / name).read_bytes())
    started = LiveServer(workspace, root / "data", auth_mode="token").start()
    yield started
    started.stop()


def client(server: LiveServer, name: str, *, admin: bool = False) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=bearer(make_token(server, name, admin=admin)))


@pytest.fixture(scope="module")
def alice(server: LiveServer) -> Iterator[httpx.Client]:
    with client(server, "alice") as http:
        yield http


@pytest.fixture(scope="module")
def bob(server: LiveServer) -> Iterator[httpx.Client]:
    with client(server, "bob") as http:
        yield http


def create(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = http.post("/api/schedules", json={**DAILY, "notebook": "users/alice/params.ipynb", **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_create_answers_201_with_id_and_the_next_five_runs(alice: httpx.Client) -> None:
    before = datetime.now(BERLIN)
    body = {
        **DAILY,
        "notebook": "users/alice/params.ipynb",
        "parameters": {"label": "day {{ tick_date }}", "n": 3},
        "enabled": True,
        "notify_email": ["ops@example.com"],
        "notify_on": ["failed", "succeeded"],
    }
    response = alice.post("/api/schedules", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"/api/schedules/{created['id']}"
    assert created["owner"] == "alice"
    assert (created["state"], created["enabled"], created["overlap"], created["missed"]) == (
        "active",
        True,
        "skip",
        "run_once",
    )
    assert created["notify_email"] == ["ops@example.com"]
    assert created["notify_on"] == ["failed", "succeeded"]
    assert created["parameters"] == {"label": "day {{ tick_date }}", "n": 3}
    runs = [datetime.fromisoformat(t) for t in created["next_runs"]]
    assert len(runs) == 5
    for run in runs:
        assert run.utcoffset() == run.astimezone(BERLIN).utcoffset()  # the schedule's own offset
        local = run.astimezone(BERLIN)
        assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    assert before < runs[0] < before + timedelta(days=4)
    assert runs == sorted(runs)
    assert created["last_run"] is None and created["last_tick"] is None
    assert alice.get(f"/api/schedules/{created['id']}").json()["next_runs"] == created["next_runs"]


@pytest.mark.parametrize(
    ("fields", "status", "code", "field"),
    [
        ({"cron": "0 9 * *"}, 422, "invalid_cron", "cron"),
        ({"cron": "0 24 * * *"}, 422, "invalid_cron", "cron"),
        ({"cron": "@reboot"}, 422, "invalid_cron", "cron"),
        ({"timezone": "Europe/Atlantis"}, 422, "invalid_timezone", "timezone"),
        ({"notify_email": ["not an address"]}, 422, "invalid_notify_email", "notify_email"),
        ({"parameters": {"label": "{{ tick_dat }}"}}, 422, "invalid_parameters", None),
        ({"parameters": {"nope": 1}}, 422, "invalid_parameters", None),
        ({"parameters": {"n": "{{ tick_date }}"}}, 422, "invalid_parameters", None),  # n is an int
        ({"steps": [{"action": "explode"}]}, 422, None, None),
        ({"timeout_s": 10**9}, 422, "invalid_timeout", "timeout_s"),
        ({"cell_timeout_s": True}, 422, "invalid_request", None),
        ({"overlap": "sometimes"}, 422, "invalid_request", None),
        ({"notify_on": ["exploded"]}, 422, "invalid_request", None),
        ({"notebook": "users/alice/missing.ipynb"}, 404, "notebook_not_found", None),
        ({"notebook": "users/bob/params.ipynb"}, 404, "notebook_not_found", None),  # not alice's to read
    ],
)
def test_refusals_name_what_is_wrong(
    alice: httpx.Client, fields: dict[str, Any], status: int, code: str | None, field: str | None
) -> None:
    response = alice.post("/api/schedules", json={**DAILY, "notebook": "users/alice/params.ipynb", **fields})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code
    if field is not None:
        assert error["field"] == field
        assert field.split("_")[0] in error["message"] or "time zone" in error["message"]


def test_a_lone_surrogate_is_refused_and_nothing_stored(alice: httpx.Client) -> None:
    """Found from outside: the schedule was stored, then its listing answered 500 until it was deleted."""
    before = len(alice.get("/api/schedules").json()["schedules"])
    body = json.dumps({**DAILY, "notebook": "users/alice/params.ipynb", "parameters": {"label": "x\ud800"}})
    response = alice.post("/api/schedules", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "lone UTF-16 surrogate" in response.json()["error"]["message"]
    listing = alice.get("/api/schedules")
    assert listing.status_code == 200 and len(listing.json()["schedules"]) == before


def test_change_pause_resume_and_delete(alice: httpx.Client) -> None:
    created = create(alice)
    url = f"/api/schedules/{created['id']}"
    paused = alice.patch(url, json={"enabled": False}).json()
    assert (paused["state"], paused["enabled"], paused["next_runs"]) == ("paused", False, [])
    resumed = alice.patch(url, json={"enabled": True}).json()
    assert resumed["state"] == "active" and len(resumed["next_runs"]) == 5
    hourly = alice.patch(url, json={"cron": "@hourly", "timezone": "UTC", "overlap": "queue"}).json()
    assert (hourly["cron"], hourly["timezone"], hourly["overlap"]) == ("0 * * * *", "UTC", "queue")
    first = datetime.fromisoformat(hourly["next_runs"][0])
    assert (first.minute, first.utcoffset()) == (0, timedelta(0))
    assert alice.patch(url, json={"timezone": "Nowhere/Else"}).json()["error"]["field"] == "timezone"
    assert alice.get(url).json()["timezone"] == "UTC"  # a refused change changes nothing
    timed = alice.patch(url, json={"timeout_s": 60}).json()
    assert timed["timeout_s"] == 60
    assert alice.patch(url, json={"timeout_s": None}).json()["timeout_s"] is None
    before = alice.get(url).json()
    for field in ("cron", "timezone", "notebook", "enabled", "overlap", "parameters", "missed", "notify_on"):
        refused = alice.patch(url, json={field: None})  # found from outside: 200, and nothing changed
        assert refused.status_code == 422 and field in refused.json()["error"]["message"], refused.text
    assert alice.get(url).json() == before
    assert created["id"] in [s["id"] for s in alice.get("/api/schedules").json()["schedules"]]
    assert alice.delete(url).status_code == 204
    assert alice.get(url).status_code == 404
    assert alice.delete(url).json()["error"]["code"] == "schedule_not_found"


@pytest.mark.kernel
def test_run_now_starts_a_job_that_carries_the_schedule(alice: httpx.Client) -> None:
    created = create(alice, parameters={"label": "{{ tick_date }} at {{ tick_time }}"})
    response = alice.post(f"/api/schedules/{created['id']}/run")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["schedule_id"] == created["id"]
    assert response.headers["location"] == f"/api/jobs/{job['id']}"
    today = datetime.now(BERLIN)
    label = job["parameters"]["label"]
    assert label.startswith(today.strftime("%Y-%m-%d")) or label.startswith(
        (today - timedelta(minutes=1)).strftime("%Y-%m-%d")
    )
    assert " at " in label and "{{" not in label
    listed = alice.get("/api/jobs", params={"schedule_id": created["id"]}).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["total"] == 1
    assert alice.get("/api/jobs", params={"schedule_id": 999_999}).json()["total"] == 0
    shown = alice.get(f"/api/schedules/{created['id']}").json()
    assert shown["last_run"]["job_id"] == job["id"]
    # Deleting the schedule keeps its jobs, and what started them.
    assert alice.delete(f"/api/schedules/{created['id']}").status_code == 204
    assert alice.get(f"/api/jobs/{job['id']}").json()["schedule_id"] == created["id"]


def test_other_users_see_no_schedule_of_yours(server: LiveServer, alice: httpx.Client, bob: httpx.Client) -> None:
    mine = create(alice)
    url = f"/api/schedules/{mine['id']}"
    for response in (
        bob.get(url),
        bob.patch(url, json={"enabled": False}),
        bob.delete(url),
        bob.post(f"{url}/run"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "schedule_not_found"
    assert mine["id"] not in [s["id"] for s in bob.get("/api/schedules").json()["schedules"]]
    assert alice.get(url).json()["enabled"] is True  # bob's PATCH changed nothing
    with client(server, "root", admin=True) as admin:
        assert admin.get(url).status_code == 200
        # A schedule runs as its owner, within the owner's own areas, admin or not: an admin's schedule cannot
        # run alice's notebook.
        response = admin.post("/api/schedules", json={**DAILY, "notebook": "users/alice/params.ipynb"})
        assert response.status_code == 404 and response.json()["error"]["code"] == "notebook_not_found"
    assert alice.get("/api/schedules/0").status_code == 422
    assert alice.get(f"/api/schedules/{2**31}").status_code == 422


def test_changes_are_pushed_to_the_owners_stream(server: LiveServer, alice: httpx.Client) -> None:
    token = make_token(server, "alice")
    with connect(f"{server.ws_url}?token={token}") as ws:
        assert json.loads(ws.recv(timeout=10))["op"] == "welcome"
        ws.send(json.dumps({"op": "subscribe", "stream": "user:alice"}))
        ws.send('{"op":"ping"}')  # its pong says the subscription is in place
        while json.loads(ws.recv(timeout=10))["op"] != "pong":
            pass
        created = create(alice)
        alice.patch(f"/api/schedules/{created['id']}", json={"enabled": False})
        alice.delete(f"/api/schedules/{created['id']}")
        seen: list[dict[str, Any]] = []
        while len(seen) < 3:
            message = json.loads(ws.recv(timeout=10))
            if message.get("op") == "event" and message["type"].startswith("schedule."):
                seen.append(message)
    assert [(m["type"], m["stream"], m["data"]["schedule"]) for m in seen] == [
        ("schedule.created", "user:alice", created["id"]),
        ("schedule.updated", "user:alice", created["id"]),
        ("schedule.deleted", "user:alice", created["id"]),
    ]
    assert seen[0]["data"]["view"]["next_runs"] == created["next_runs"]
    assert seen[1]["data"]["view"]["state"] == "paused"


def test_the_openapi_document_describes_the_schedules(alice: httpx.Client) -> None:
    document = alice.get("/openapi.json").json()
    paths = document["paths"]
    assert set(paths["/api/schedules"]) >= {"get", "post"}
    assert set(paths["/api/schedules/{schedule_id}"]) >= {"get", "patch", "delete"}
    assert "post" in paths["/api/schedules/{schedule_id}/run"]
    assert {"201", "404", "422"} <= set(paths["/api/schedules"]["post"]["responses"])
    out = document["components"]["schemas"]["ScheduleOut"]
    assert {"id", "next_runs", "last_run", "state", "cron", "timezone", "notify_email"} <= set(out["properties"])
    assert any(p["name"] == "schedule_id" for p in paths["/api/jobs"]["get"]["parameters"])
