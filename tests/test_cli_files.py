"""`nbrelay files …` and `nbrelay reports`, run for real (`python -m nbrelay`) against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import NOTEBOOKS, ServerProcess, free_port

TINY = (NOTEBOOKS / "tiny.ipynb").read_bytes()


def nbrelay(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NBRELAY_")}
    clean.update({"COLUMNS": "250", "NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "nbrelay", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        cwd=cwd,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit code 2 and the server's message on stderr, no traceback."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "error:" in result.stderr and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def server(server_factory: Any) -> ServerProcess:
    return server_factory(workers=1, env={"NBRELAY_KERNEL_POOL_SIZE": "0"})  # type: ignore[no-any-return]


def files(server: ServerProcess, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return nbrelay("files", *args, "--server", server.url, **kw)


# help ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["ls", "put", "get", "cp", "mv", "rm", "mkdir"])
def test_help_of_each_files_command(command: str) -> None:
    out = ok(nbrelay("files", command, "--help"))
    assert "Usage" in out and "--server" in out and "--token" in out


def test_help_lists_files_and_reports() -> None:
    out = ok(nbrelay("--help"))
    assert "files" in out and "reports" in out
    out = ok(nbrelay("files", "--help"))
    for command in ("ls", "put", "get", "cp", "mv", "rm", "mkdir"):
        assert command in out


# ls -----------------------------------------------------------------------------------------------------------------
def test_ls(server: ServerProcess) -> None:
    (server.workspace / "sub").mkdir()
    (server.workspace / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (server.workspace / ".secret").write_text("x")
    root = ok(files(server, "ls"))
    assert "tiny.ipynb" in root and "sub/" in root and ".secret" not in root
    line = next(line for line in root.splitlines() if "tiny.ipynb" in line)
    assert "notebook" in line and f"{len(TINY)} bytes" in line  # sizes for people: bytes, kB, MB
    for header in ("name", "type", "size", "modified"):
        assert header in root
    sub = ok(files(server, "ls", "sub"))
    line = next(line for line in sub.splitlines() if "data.csv" in line)
    assert "file" in line and "8 bytes" in line and "1 entry" in sub
    listed = json.loads(ok(files(server, "ls", "sub", "--json")))
    assert [(e["name"], e["type"], e["size"]) for e in listed] == [("data.csv", "file", 8)]
    single = ok(files(server, "ls", "tiny.ipynb"))
    assert "tiny.ipynb" in single and "1 entry" in single
    fails(files(server, "ls", "nope"), "nothing at nope")
    fails(files(server, "ls", "../etc"), "'..' is not allowed")


def test_server_and_token_from_the_environment(server_factory: Any, tmp_path: Path) -> None:
    server = server_factory(workers=1, env={"NBRELAY_AUTH_MODE": "token", "NBRELAY_KERNEL_POOL_SIZE": "0"})
    created = ok(nbrelay("token", "create", "alice", "--data-dir", str(server.data_dir)))
    token = created.strip().splitlines()[-1]
    local = tmp_path / "mine.txt"
    local.write_text("mine")
    env = {"NBRELAY_SERVER": server.url, "NBRELAY_TOKEN": token}
    assert "uploaded" in ok(nbrelay("files", "put", str(local), "users/alice/mine.txt", env=env))
    assert (server.workspace / "users" / "alice" / "mine.txt").read_text() == "mine"
    listing = ok(nbrelay("files", "ls", env=env))
    assert "users/" in listing and "shared/" in listing and "tiny.ipynb" not in listing
    # --token on the command line works the same; no token: the server's 401 message
    assert "mine.txt" in ok(nbrelay("files", "ls", "users/alice", "--server", server.url, "--token", token))
    fails(nbrelay("files", "ls", "--server", server.url), "")
    fails(nbrelay("files", "put", str(local), "users/bob/x.txt", env=env), "you may not change users/bob/x.txt")
    fails(nbrelay("files", "get", "tiny.ipynb", str(tmp_path / "t.ipynb"), env=env), "nothing at tiny.ipynb")


def test_unreachable_server_exits_2() -> None:
    fails(nbrelay("files", "ls", "--server", f"http://127.0.0.1:{free_port()}"), "cannot reach the server")


# put / get ----------------------------------------------------------------------------------------------------------
def test_a_refusal_prints_the_servers_message_and_hint(server: ServerProcess) -> None:
    result = files(server, "ls", "notes\\[2026].txt")
    fails(result, "error: backslashes are not allowed in paths: 'notes\\\\[2026].txt'\n")
    assert result.stderr.endswith("hint: use '/' between folders\n"), result.stderr


def test_put(server: ServerProcess, tmp_path: Path) -> None:
    local = tmp_path / "notes.txt"
    local.write_text("first")
    out = ok(files(server, "put", str(local)))
    assert "uploaded" in out and "notes.txt" in out and "(5 bytes)" in out
    assert (server.workspace / "notes.txt").read_text() == "first"
    local.write_text("second")
    fails(files(server, "put", str(local)), "notes.txt exists; ask to overwrite it")
    assert (server.workspace / "notes.txt").read_text() == "first"
    ok(files(server, "put", str(local), "--overwrite"))
    assert (server.workspace / "notes.txt").read_text() == "second"
    (server.workspace / "sub").mkdir()
    ok(files(server, "put", str(local), "sub/"))
    ok(files(server, "put", str(local), "sub/renamed.txt"))
    assert (server.workspace / "sub" / "notes.txt").read_text() == "second"
    assert (server.workspace / "sub" / "renamed.txt").read_text() == "second"
    fails(files(server, "put", str(local), "missing/notes.txt"), "no folder missing")
    fails(files(server, "put", str(local), "bad.ipynb"), "bad.ipynb is not a valid notebook")
    assert files(server, "put", str(tmp_path / "absent.txt")).returncode == 2  # typer: the file must exist
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    result = files(server, "put", str(big), "sub/big.bin")
    assert "(3.1 MB)" in ok(result)
    assert "put big.bin" in result.stderr  # the progress bar
    assert (server.workspace / "sub" / "big.bin").read_bytes() == big.read_bytes()


def test_get(server: ServerProcess, tmp_path: Path) -> None:
    (server.workspace / "sub").mkdir()
    payload = os.urandom(2 * 1024 * 1024)
    (server.workspace / "sub" / "blob.bin").write_bytes(payload)
    result = files(server, "get", "sub/blob.bin", cwd=tmp_path)
    assert "downloaded sub/blob.bin" in ok(result) and (tmp_path / "blob.bin").read_bytes() == payload
    assert "get blob.bin" in result.stderr  # over 1 MB: a progress bar
    (tmp_path / "into").mkdir()
    ok(files(server, "get", "tiny.ipynb", str(tmp_path / "into")))
    assert (tmp_path / "into" / "tiny.ipynb").read_bytes() == TINY
    (tmp_path / "existing.ipynb").write_text("old")
    ok(files(server, "get", "tiny.ipynb", str(tmp_path / "existing.ipynb")))
    assert (tmp_path / "existing.ipynb").read_bytes() == TINY
    before = sorted(p.name for p in tmp_path.iterdir())
    fails(files(server, "get", "missing.txt", str(tmp_path / "missing.txt")), "no file at missing.txt")
    fails(files(server, "get", "sub", str(tmp_path / "sub")), "no file at sub")
    fails(files(server, "get", "../../etc/passwd", str(tmp_path / "passwd")), "not allowed")
    nowhere = tmp_path / "no-such-folder" / "x.ipynb"  # found from outside: a traceback
    fails(files(server, "get", "tiny.ipynb", str(nowhere)), f"cannot write {nowhere}: No such file or directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary file left


# cp / mv / rm / mkdir -----------------------------------------------------------------------------------------------
def test_cp(server: ServerProcess) -> None:
    (server.workspace / "sub").mkdir()
    assert "copied tiny.ipynb → tiny-Copy1.ipynb" in ok(files(server, "cp", "tiny.ipynb", "/"))
    assert "→ tiny-Copy2.ipynb" in ok(files(server, "cp", "tiny.ipynb", ""))
    assert "→ sub/other.ipynb" in ok(files(server, "cp", "tiny.ipynb", "sub", "--name", "other.ipynb"))
    assert (server.workspace / "sub" / "other.ipynb").read_bytes() == TINY
    fails(files(server, "cp", "tiny.ipynb", "sub", "--name", "other.ipynb"), "sub/other.ipynb exists")
    fails(files(server, "cp", "nope.ipynb", "sub"), "no file at nope.ipynb")
    fails(files(server, "cp", "tiny.ipynb", "nowhere"), "no folder nowhere")


def test_mv(server: ServerProcess) -> None:
    (server.workspace / "a.txt").write_text("a")
    (server.workspace / "b.txt").write_text("b")
    (server.workspace / "sub").mkdir()
    assert "moved a.txt → sub/a.txt" in ok(files(server, "mv", "a.txt", "sub/a.txt"))
    assert (server.workspace / "sub" / "a.txt").read_text() == "a"
    fails(files(server, "mv", "b.txt", "sub/a.txt"), "sub/a.txt exists; ask to overwrite it")
    ok(files(server, "mv", "b.txt", "sub/a.txt", "--overwrite"))
    assert (server.workspace / "sub" / "a.txt").read_text() == "b" and not (server.workspace / "b.txt").exists()
    ok(files(server, "mv", "sub", "renamed"))
    assert (server.workspace / "renamed" / "a.txt").exists()
    fails(files(server, "mv", "renamed", "renamed/inner"), "cannot move renamed into itself")
    fails(files(server, "mv", "gone.txt", "x.txt"), "nothing at gone.txt")


def test_rm(server: ServerProcess) -> None:
    (server.workspace / "full" / "deep").mkdir(parents=True)
    (server.workspace / "full" / "deep" / "f.txt").write_text("f")
    (server.workspace / "x.txt").write_text("x")
    assert "deleted x.txt" in ok(files(server, "rm", "x.txt"))
    assert not (server.workspace / "x.txt").exists()
    fails(files(server, "rm", "x.txt"), "nothing at x.txt")
    fails(files(server, "rm", "full"), "full is not empty")
    # dot segments reach the server as written (an HTTP client would resolve ../ away, onto another route)
    fails(files(server, "rm", "../api/reports/1"), "'..' is not allowed")
    fails(files(server, "rm", "full/../x.txt"), "'..' is not allowed")
    assert (server.workspace / "full" / "deep" / "f.txt").exists()
    ok(files(server, "rm", "full", "--recursive"))
    assert not (server.workspace / "full").exists()
    (server.workspace / "again").mkdir()
    (server.workspace / "again" / "f").write_text("f")
    ok(files(server, "rm", "-r", "again"))
    assert not (server.workspace / "again").exists()


def test_mkdir(server: ServerProcess) -> None:
    assert "created new/" in ok(files(server, "mkdir", "new"))
    ok(files(server, "mkdir", "new/inner"))
    assert (server.workspace / "new" / "inner").is_dir()
    fails(files(server, "mkdir", "new"), "new exists")
    fails(files(server, "mkdir", "missing/inner"), "no folder missing")


# reports ------------------------------------------------------------------------------------------------------------
class _Reports(BaseHTTPRequestHandler):
    """A stand-in for GET /api/reports with the documented shape."""

    seen: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        type(self).seen.append(query)
        if url.path != "/api/reports":
            self._send(404, {"error": {"code": "not_found", "message": "Not Found"}})
        elif query.get("notebook") == ["secret.ipynb"]:
            self._send(403, {"error": {"code": "forbidden", "message": "not yours: secret.ipynb"}})
        else:
            reports = [
                {
                    "job": 12,
                    "state": "succeeded",
                    "parameters": {"n": 3, "label": "x"},
                    "size_bytes": 28001,
                    "finished_at": "2026-01-02T03:04:05.678Z",
                    "report_url": "/api/jobs/12/report",
                },
                {
                    "job": 7,
                    "state": "failed",
                    "parameters": {},
                    "size_bytes": None,
                    "finished_at": "2026-01-01T00:00:00.000Z",
                    "report_url": None,
                },
            ]
            self._send(200, {"reports": reports, "total": 9})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_reports() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Reports)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Reports.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_reports_prints_the_documented_shape(fake_reports: str) -> None:
    out = ok(nbrelay("reports", "sub/my notebook.ipynb", "--server", fake_reports, "--limit", "5"))
    assert _Reports.seen[-1] == {"notebook": ["sub/my notebook.ipynb"], "limit": ["5"], "offset": ["0"]}
    row = next(line for line in out.splitlines() if "│ 12 " in line)
    for part in ("succeeded", '{"n":3,"label":"x"}', "28.0 kB", "2026-01-02 03:04:05"):
        assert part in row, row
    assert f"{fake_reports}/api/jobs/12/report" in out
    assert "failed" in next(line for line in out.splitlines() if "│ 7 " in line)
    assert "2 of 9" in out
    as_json = json.loads(ok(nbrelay("reports", "x.ipynb", "--server", fake_reports, "--json")))
    assert as_json["total"] == 9 and [r["job"] for r in as_json["reports"]] == [12, 7]
    fails(nbrelay("reports", "secret.ipynb", "--server", fake_reports), "not yours: secret.ipynb")


def test_reports_in_a_narrow_terminal_list_the_addresses_whole_under_the_table(fake_reports: str) -> None:
    out = ok(nbrelay("reports", "sub/my notebook.ipynb", "--server", fake_reports, env={"COLUMNS": "80"}))
    assert "…" not in out, out
    assert all(len(line) <= 80 for line in out.splitlines() if "│" in line), out
    # An address folded into a column could be neither clicked nor copied: it has a line of its own, whole.
    assert f"report of job 12: {fake_reports}/api/jobs/12/report" in out.splitlines(), out
    assert "report of job 7" not in out  # it has no report
    rows = [line.split("│")[1:-1] for line in out.splitlines() if "│" in line]
    joined = ["".join(parts).replace(" ", "") for parts in zip(*rows, strict=True)]
    assert any('{"n":3,"label":"x"}' in cell for cell in joined), out
    wide = ok(nbrelay("reports", "sub/my notebook.ipynb", "--server", fake_reports, env={"COLUMNS": "250"}))
    assert f"{fake_reports}/api/jobs/12/report │" in wide and "report of job" not in wide, wide


@pytest.mark.kernel
def test_reports_against_the_real_server(server: ServerProcess) -> None:
    job_ids = []
    for n in (1, 2):
        answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": "tiny.ipynb", "parameters": {"x": n}})
        assert answer.status_code == 202, answer.text
        job_ids.append(answer.json()["id"])
    for job_id in job_ids:
        assert server.wait_for(job_id, timeout_s=120)["state"] == "succeeded"
    other = httpx.post(f"{server.url}/api/jobs", json={"notebook": "no_params.ipynb"}).json()["id"]
    server.wait_for(other, timeout_s=120)
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/api/reports", params={"notebook": "tiny.ipynb"}).json()["total"] < 2:
        assert time.monotonic() < deadline, "the reports did not show up"
        time.sleep(0.1)
    out = ok(nbrelay("reports", "tiny.ipynb", "--server", server.url))
    rows = [line for line in out.splitlines() if "succeeded" in line]
    assert len(rows) == 2, out
    assert '{"x":2}' in rows[0] and '{"x":1}' in rows[1]  # newest first
    assert f"{server.url}/api/jobs/{job_ids[1]}/report" in out and "2 of 2" in out
    listed = json.loads(ok(nbrelay("reports", "tiny.ipynb", "--server", server.url, "--json")))
    assert {r["job"] for r in listed["reports"]} == set(job_ids)
    for report in listed["reports"]:
        assert {"job", "state", "parameters", "size_bytes", "finished_at", "report_url"} <= set(report)
    assert "0 of 0" in ok(nbrelay("reports", "never-ran.ipynb", "--server", server.url))
