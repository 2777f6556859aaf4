"""Every route of the live OpenAPI document, called as user B with user A's objects: never a 2xx, never A's data.

User A owns one of each object (a notebook in A's folder, a job and its report, a schedule, a webhook endpoint
and one of its deliveries). The walk reads /openapi.json from the running server, so a route added later is
walked too: an operation with a path parameter is called with A's values for it; one without must either name
an object in its body or query (REFERENCES) or be listed as not per-object (NOT_PER_OBJECT), or the test fails.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NOTEBOOKS, free_port
from tests.live import LiveServer, bearer, make_token

MARK = f"alice-secret-{uuid.uuid4().hex[:10]}"  # in every object of A's: seen in an answer to B, it leaked
REFUSED = {403, 404}

# Operations without a path parameter that act on no object of anyone's (the caller's own list, session or
# settings, or the service itself). Adding a route here says: it cannot be pointed at another user's object.
NOT_PER_OBJECT = {
    ("GET", "/api/session"): "who the caller is",
    ("POST", "/api/session"): "trades the caller's own token",
    ("DELETE", "/api/session"): "drops the caller's cookie",
    ("GET", "/api/contents"): "the workspace root as the caller may see it",
    ("GET", "/api/schedules"): "the caller's schedules",
    ("GET", "/api/webhooks"): "the caller's endpoints",
    ("GET", "/api/notify/email"): "the caller's e-mail settings",
    ("PUT", "/api/notify/email"): "the caller's e-mail settings",
    ("GET", "/api/notify/email/deliveries"): "the caller's e-mails",
    ("GET", "/api/page"): "the page's first data, the caller's",
    ("GET", "/api/legacy/unfinished"): "the caller's unfinished jobs",
    ("GET", "/sse"): "push: tests/security/test_push_frames.py and tests/push/transports/test_auth.py",
    ("GET", "/api/health"): "the service's liveness",
    ("GET", "/api/ready"): "the service's readiness: its own database, hub and executor, no user's object",
}


@dataclass
class World:
    server: LiveServer
    alice: str
    bob: str
    objects: dict[str, Any]  # path parameter name → A's value
    notebook: str  # A's notebook, users/alice/…
    job: dict[str, Any]
    schedule: dict[str, Any]
    webhook: dict[str, Any]

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=30)


def wait_until(check: Any, what: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def secret_notebook() -> bytes:
    nb = json.loads((NOTEBOOKS / "tiny.ipynb").read_text())
    nb["cells"][1]["source"] = [f"print({MARK!r})"]
    return json.dumps(nb).encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("walk")
    shutil.copytree(NOTEBOOKS, tmp / "workspace")
    server = LiveServer(
        tmp / "workspace", tmp / "data", auth_mode="token", webhook_allow_private=True, notify_poll_s=0.2
    ).start()
    alice, bob = make_token(server, "alice"), make_token(server, "bob")
    a = bearer(alice)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        notebook = "users/alice/daily.ipynb"  # the name is what B sends: the mark is inside
        assert http.put(f"/api/contents/{notebook}", content=secret_notebook(), headers=a).status_code == 201
        # Nobody listens there: the delivery fails and is logged, which is all the walk needs.
        hook = {"url": f"http://127.0.0.1:{free_port()}/{MARK}", "events": ["job.succeeded", "job.failed"]}
        webhook = http.post("/api/webhooks", json=hook, headers=a).json()
        job = http.post("/api/jobs", json={"notebook": notebook}, headers=a).json()
        job = wait_until(
            lambda: (j := http.get(f"/api/jobs/{job['id']}", headers=a).json())["state"] == "succeeded" and j,
            "A's job",
        )
        body = {"name": MARK, "notebook": notebook, "cron": "0 0 1 1 *", "enabled": False}
        schedule = http.post("/api/schedules", json=body, headers=a).json()
        assert "id" in schedule, schedule
        deliveries = wait_until(
            lambda: http.get(f"/api/webhooks/{webhook['id']}/deliveries", headers=a).json()["deliveries"],
            "a delivery of A's webhook",
        )
    objects = {
        "job_id": job["id"],
        "path": notebook,
        "schedule_id": schedule["id"],
        "webhook_id": webhook["id"],
        "delivery_id": deliveries[0]["id"],
    }
    yield World(server, alice, bob, objects, notebook, job, schedule, webhook)
    server.stop()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch", "head", "options"}:
                yield method.upper(), template, operation


def path_parameters(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"]


def schema_value(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A minimal value valid for `schema`: the required properties of objects, the first of a choice."""
    if "$ref" in schema:
        return schema_value(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if "anyOf" in schema:
        return schema_value(schema["anyOf"][0], components)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: schema_value(properties[name], components) for name in schema.get("required", [])}
    return {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": [], "null": None}.get(kind)


# Bodies for operations whose schema alone would not aim at A's object (or would be refused before the route
# looks at whose it is). {name} is filled from World.objects; B's own area is users/bob.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/contents/{path}"): {"path": "users/bob/stolen.ipynb"},
    ("POST", "/api/contents/{path}"): {"type": "directory", "name": "stolen"},
    ("PATCH", "/api/schedules/{schedule_id}"): {"enabled": True, "name": "stolen"},
}
# Operations without a path parameter whose body or query names an object: aimed at A's.
REFERENCES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/jobs"): {"json": {"notebook": "{path}"}},
    ("GET", "/api/jobs"): {"params": {"notebook": "{path}"}},
    ("GET", "/api/reports"): {"params": {"notebook": "{path}"}},
    ("POST", "/api/contents"): {"json": {"copy_from": "{path}"}},
    ("POST", "/api/schedules"): {"json": {"notebook": "{path}", "cron": "0 0 1 1 *"}},
    ("POST", "/api/webhooks"): {"json": {"url": "http://127.0.0.1:9/bob", "schedule_id": "{schedule_id}"}},
}
# Lists answer 200 with nothing of A's in them, rather than 404: the filter names no object of the caller's.
LISTS = {("GET", "/api/jobs"), ("GET", "/api/reports")}


def filled(value: Any, objects: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**objects)
    if isinstance(value, dict):
        return {k: filled(v, objects) for k, v in value.items()}
    return value


def request_for(
    method: str, template: str, operation: dict[str, Any], world: World, components: dict[str, Any]
) -> dict[str, Any]:
    """The request B sends for this operation (httpx keyword arguments)."""
    objects = world.objects
    missing = [name for name in path_parameters(operation) if name not in objects]
    assert not missing, f"{method} {template}: no object of A's for {missing}; add one to the world fixture"
    url = template.replace("{path}", objects["path"]).format(**objects)
    request: dict[str, Any] = {"method": method, "url": url}
    key = (method, template)
    if key in BODIES:
        request["json"] = filled(BODIES[key], objects)
    elif key in REFERENCES:
        request.update(filled(REFERENCES[key], objects))
    elif "requestBody" in operation:
        content = operation["requestBody"]["content"]
        if "application/json" in content:
            request["json"] = schema_value(content["application/json"]["schema"], components)
        else:
            request["content"] = secret_notebook().replace(MARK.encode(), b"bob")
    return request


def test_every_route_refuses_user_b_with_user_a_objects(world: World) -> None:
    http = world.http()
    document = http.get("/openapi.json").json()
    components = document.get("components", {}).get("schemas", {})
    walked, leaks = [], []
    for method, template, operation in operations(document):
        key = (method, template)
        if not path_parameters(operation) and key not in REFERENCES:
            assert key in NOT_PER_OBJECT, (
                f"{method} {template} takes no path parameter and is in neither REFERENCES (aim its body or query "
                "at A's object) nor NOT_PER_OBJECT (say why it cannot reach another user's object)"
            )
            continue
        request = request_for(method, template, operation, world, components)
        answer = http.request(**request, headers=bearer(world.bob))
        walked.append(key)
        text = answer.text
        if MARK in text or world.notebook in _listed(answer):
            leaks.append(f"{method} {request['url']}: A's data in the answer ({answer.status_code}): {text[:200]}")
        elif key in LISTS:
            if answer.status_code != 200:
                leaks.append(f"{method} {request['url']}: {answer.status_code} for a list: {text[:200]}")
        elif answer.status_code not in REFUSED:
            leaks.append(f"{method} {request['url']}: {answer.status_code}, not 403/404: {text[:200]}")
    assert not leaks, "\n".join(leaks)
    # Every per-object family was reached: jobs, reports, contents, files, notebooks, schedules, webhooks.
    prefixes = {template.split("/{")[0] for _, template in walked}
    assert {"/api/jobs", "/api/reports", "/api/contents", "/files", "/api/notebooks"} <= prefixes, prefixes
    assert {"/api/schedules", "/api/webhooks"} <= prefixes, prefixes
    assert len(walked) >= 25, walked


def _listed(answer: httpx.Response) -> str:
    """The items of a list answer as text (a 404's message may repeat the path B asked for; a list may not)."""
    if answer.status_code != 200 or not answer.headers.get("content-type", "").startswith("application/json"):
        return ""
    body = answer.json()
    items = [v for v in body.values() if isinstance(v, list)] if isinstance(body, dict) else [body]
    return json.dumps(items)


def test_a_objects_are_unchanged_after_the_walk(world: World) -> None:
    """Run after the walk (file order): whatever B sent, A's objects are as A left them."""
    http = world.http()
    a = bearer(world.alice)
    assert http.get(f"/api/jobs/{world.job['id']}", headers=a).json()["state"] == "succeeded"
    assert http.get(f"/api/jobs/{world.job['id']}/report", headers=a).status_code == 200
    content = http.get(f"/api/contents/{world.notebook}", headers=a)
    assert content.status_code == 200 and MARK in content.text
    schedule = http.get(f"/api/schedules/{world.schedule['id']}", headers=a).json()
    assert schedule["name"] == MARK and schedule["enabled"] is False
    webhook = http.get(f"/api/webhooks/{world.webhook['id']}", headers=a).json()
    assert webhook["url"] == world.webhook["url"]
    workspace = world.server.settings.workspace
    assert not list((workspace / "users").glob("*/stolen*")), "B made something out of A's objects"
    assert not (workspace / "users" / "bob" / "daily.ipynb").exists()
    assert sorted(p.name for p in Path(workspace / "users" / "alice").iterdir()) == ["daily.ipynb"]
