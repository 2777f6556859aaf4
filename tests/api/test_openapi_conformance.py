"""The API answers as its OpenAPI document says, for every operation in it (routers added later included):
schemathesis generates requests from /openapi.json and sends them to a real `nbrelay serve` in auth mode token,
as user alice, as user bob, or without credentials.

Checked on every answer: no 5xx; the status code, content type, headers and body are documented; a request the
schema calls valid is never refused as malformed (400, 415: only 401/403/404/409/413/422/429 may refuse it). For
every path, a method it does not have is a 405 naming the path's real methods in `Allow`. Seeded and bounded
(examples per operation, time per request), so CI sees the same requests every run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from nbrelay.app import create_app
from nbrelay.config import Settings
from tests.conftest import NOTEBOOKS, ServerProcess
from tests.live import bearer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    unsupported_method,
    allow_header_conformance,
]
# What may refuse a request the schema calls valid: who you are, what exists, the state of things, limits, and
# rules the schema cannot say (a notebook's own parameters). Not 400 or 415: those mean "not what the schema says".
ACCEPTABLE_REFUSALS = ["2xx", "3xx", "401", "403", "404", "409", "413", "422", "429"]
CONFIG = {
    "seed": 20261204,
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTABLE_REFUSALS}},
    # Examples and fuzzing. Not coverage: it builds its cases when the tests are collected, and on patterns with
    # lookaheads (workspace paths) that took minutes; the 405/Allow walk below does what its method cases did.
    "phases": {"stateful": {"enabled": False}, "coverage": {"enabled": False}},
    "generation": {"max-examples": 12, "deterministic": False},
    "request-timeout": 20,
    "max-stream-events": 2,  # /sse: welcome and snapshot, then the stream would go on for ever
}
USERS = ("alice", "bob")


def create_token(data_dir: Path, name: str) -> str:
    command = [sys.executable, "-m", "nbrelay", "token", "create", name, "--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    root = tmp_path_factory.mktemp("conformance")
    workspace = root / "workspace"
    for user in USERS:
        (workspace / "users" / user).mkdir(parents=True)
        (workspace / "users" / user / "tiny.ipynb").write_bytes((NOTEBOOKS / "tiny.ipynb").read_bytes())
    tokens = {name: create_token(root / "data", name) for name in USERS}
    env = {"NBRELAY_AUTH_MODE": "token", "NBRELAY_KERNEL_POOL_SIZE": "0"}
    server = ServerProcess(workspace=workspace, data_dir=root / "data", workers=1, env=env).start()
    yield server, tokens
    server.stop()


# The document the server below serves (same code, same auth mode), read when the tests are collected: one test
# per operation. (schemathesis' lazy fixture loader does not run under pytest 9.)
DOCUMENT = create_app(Settings(auth_mode="token", workspace=Path("unused"), data_dir=Path("unused"))).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=SchemathesisConfig.from_dict(CONFIG))


def who_asks(case: Any) -> str | None:
    """alice, bob or nobody, picked from the request itself: the same request always goes as the same user."""
    request = f"{case.method} {case.formatted_path} {case.query} {case.body!r}"
    return [*USERS, None][zlib.crc32(request.encode(errors="replace")) % 3]


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: Any, token_server: tuple[ServerProcess, dict[str, str]]) -> None:
    server, tokens = token_server
    who = who_asks(case)
    if who is not None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {tokens[who]}"}
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=20)


HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH")


@pytest.mark.parametrize("path", sorted(DOCUMENT["paths"]))
def test_a_method_the_path_does_not_have_is_405_naming_those_it_has(
    path: str, token_server: tuple[ServerProcess, dict[str, str]]
) -> None:
    server, tokens = token_server
    documented = {method.upper() for method in DOCUMENT["paths"][path]}
    concrete = re.sub(r"\{[^}]+\}", "1", path)
    for method in [m for m in HTTP_METHODS if m not in documented][:2]:
        response = httpx.request(method, server.url + concrete, headers=bearer(tokens["alice"]), timeout=20)
        assert response.status_code == 405, (method, path, response.text)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed - {"HEAD", "OPTIONS"} == documented - {"HEAD", "OPTIONS"}, (method, path)
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_server_logged_no_traceback(token_server: tuple[ServerProcess, dict[str, str]]) -> None:
    """Runs after the operations (same module, same process): bad input never becomes a logged exception."""
    server, _ = token_server
    assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
    assert "Traceback" not in server.log(), server.log()[-5000:]
