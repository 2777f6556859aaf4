"""The `nbrelay` command, run for real (`python -m nbrelay`) against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from nbrelay import __version__, cli
from tests.conftest import NOTEBOOKS, ServerProcess, free_port

pytestmark = pytest.mark.kernel


def nbrelay(
    *args: str, timeout_s: float = 120, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # rich wraps at the terminal width: 250 columns keep messages on one line for the asserts, unless `env` says
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NBRELAY_")},
        "COLUMNS": "250",
        "NO_COLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "nbrelay", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=cwd,
        check=False,
    )


def job_ids(server: ServerProcess) -> set[int]:
    response = httpx.get(f"{server.url}/api/jobs", params={"limit": 500}, timeout=30)
    return {job["id"] for job in response.json()["jobs"]}


def the_new_job(server: ServerProcess, before: set[int], result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    new = job_ids(server) - before
    assert len(new) == 1, f"expected one new job, got {new}\n{result.stdout}\n{result.stderr}"
    job_id = new.pop()
    assert re.search(rf"\bjob {job_id}\b", result.stdout), result.stdout
    return httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=30).json()  # type: ignore[no-any-return]


# help ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["serve"], ["worker"], ["run"], ["jobs"], ["token"]])
def test_help_works_for_every_command(command: list[str]) -> None:
    result = nbrelay(*command, "--help", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    if not command:
        for name in ("serve", "run", "jobs"):
            assert name in result.stdout
    else:
        assert command[0] in result.stdout
    if command == ["run"]:
        for option in ("--param", "--server", "--local", "--timeout"):
            assert option in result.stdout


COMMANDS = [
    [],
    ["serve"],
    ["worker"],
    ["run"],
    ["jobs"],
    ["reports"],
    ["token"],
    ["token", "create"],
    ["token", "list"],
    ["token", "revoke"],
    ["files"],
    ["files", "ls"],
    ["files", "put"],
    ["schedules"],
    ["schedules", "list"],
]
LIST_COMMANDS = [["jobs"], ["reports"], ["files", "ls"], ["token", "list"], ["schedules", "list"]]


def test_version() -> None:
    result = nbrelay("--version", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nbrelay {__version__}"


def test_importing_the_cli_leaves_rich_and_the_client_to_the_commands_that_use_them() -> None:
    """`nbrelay --help` and `--version` do not pay for rich (consoles, tables, progress bars) nor for the client's
    httpx and websockets: the commands that print or call a server import them."""
    code = "import sys, nbrelay.cli; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    imported = set(result.stdout.split())
    assert {"nbrelay", "typer"} <= imported
    assert not imported & {"rich", "httpx", "websockets"}, sorted(imported)


def help_of(*command: str, option: str = "-h") -> str:
    """A command's help with its lines joined, from this process (13 interpreters would take a while)."""
    result = CliRunner().invoke(cli.app, [*command, option], prog_name="nbrelay")
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "nbrelay")
def test_h_is_help_and_flags_read_as_flags(command: list[str]) -> None:
    short = help_of(*command)
    assert short == help_of(*command, option="--help")
    assert "Usage: nbrelay" in short and "-h, --help" in short
    assert "<bool>" not in short  # a flag takes no value, and its help says so


@pytest.mark.parametrize("command", LIST_COMMANDS, ids=" ".join)
def test_every_list_command_speaks_json_for_scripts(command: list[str]) -> None:
    assert "--json" in help_of(*command)


def test_help_shows_the_defaults() -> None:
    serve = help_of("serve")
    for shown in ("default: 127.0.0.1", "default: 8765", "default: workspace", "default: data", "NBRELAY_PORT"):
        assert shown in serve, serve
    assert "--examples / --no-examples" in serve and "default: examples" in serve
    run = help_of("run")
    assert "default: http://127.0.0.1:8765" in run and "--follow / --poll" in run and "default: follow" in run
    assert "default: 20" in help_of("jobs")
    assert "--admin / --no-admin" in help_of("token", "create")


# settings --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_misspelt_setting_is_said_at_start(tmp_path: Path, command: str) -> None:
    """Found from outside: NBRELAY_DATABSE_URL left a worker on a SQLite file of its own, ready, in silence."""
    env = {"NBRELAY_DATA_DIR": str(tmp_path), "NBRELAY_WORKSPACE": str(tmp_path / "ws")}
    env |= {"NBRELAY_DATABSE_URL": "postgresql://nbrelay@db/nbrelay", "NBRELAY_PORT": "-1"}
    result = nbrelay(command, timeout_s=60, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert (
        "warning: NBRELAY_DATABSE_URL is no setting of nbrelay and is ignored (did you mean NBRELAY_DATABASE_URL?)"
        in said
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "setting", "value", "expected"),
    [
        *(
            (command, "NBRELAY_BROKER_URL", "kafka://broker:9092", "redis://host:port/db")
            for command in ("serve", "worker")
        ),
        *(
            (command, "NBRELAY_DATABASE_URL", "mysql://db/nbrelay", "postgresql://user@host/db")
            for command in ("serve", "worker")
        ),
        ("worker", "NBRELAY_CELERY_BROKER_URL", "sqs://queue", "amqp://user:password@host:5672//"),
        ("serve", "NBRELAY_EXECUTOR", "dask", "'local' or 'celery'"),  # `nbrelay worker` is celery's by definition
    ],
)
def test_an_unknown_backend_is_refused_at_start_naming_the_setting(
    tmp_path: Path, command: str, setting: str, value: str, expected: str
) -> None:
    env = {"NBRELAY_DATA_DIR": str(tmp_path), "NBRELAY_WORKSPACE": str(tmp_path / "ws"), setting: value}
    result = nbrelay(command, timeout_s=60, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert setting in result.stderr and expected in result.stderr
    assert "Traceback" not in result.stderr


# run on a server ----------------------------------------------------------------------------------------------------
def test_run_sends_parameters_typed_as_the_notebook_declares(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay(
        "run",
        "params.ipynb",
        "-p",
        "n=3",
        "-p",
        "label=hi",
        "-p",
        "flag=true",
        "-p",
        "items=[1,2]",
        "--server",
        shared_server.url,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    job = the_new_job(shared_server, before, result)
    assert job["state"] == "succeeded"
    assert job["parameters"] == {"n": 3, "label": "hi", "flag": True, "items": [1, 2]}
    assert f"report: {shared_server.url}/api/jobs/{job['id']}/report\n" in result.stdout  # an address to open


def test_run_keeps_string_parameters_as_strings(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay(
        "run", "params.ipynb", "-p", "label=42", "-p", "x=2", "-p", "flag=no", "--server", shared_server.url
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job = the_new_job(shared_server, before, result)
    assert job["parameters"] == {"label": "42", "x": 2, "flag": False}


def test_run_of_a_failing_notebook_exits_1_and_prints_the_error(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "fail.ipynb", "--server", shared_server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed" in result.stdout
    assert "ValueError" in result.stdout
    assert "boom in cell 2" in result.stdout
    assert "cell 2 raised ValueError" in result.stdout  # numbered as people count, and as the report's In [2]
    job = the_new_job(shared_server, before, result)
    assert job["state"] == "failed"
    # The report of a failed run shows where it stopped: its address is printed too.
    assert f"report: {shared_server.url}/api/jobs/{job['id']}/report\n" in result.stdout


def test_run_with_an_unknown_parameter_fails_with_the_message(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "params.ipynb", "-p", "nope=1", "--server", shared_server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: parameter 'nope': unknown parameter; the notebook's parameters are: " in result.stderr
    assert job_ids(shared_server) == before


def test_run_with_a_bad_boolean_fails_before_submitting(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "params.ipynb", "-p", "flag=maybe", "--server", shared_server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'maybe' is not true/false" in result.stderr
    assert job_ids(shared_server) == before


def test_run_of_a_missing_notebook_fails_with_the_message(shared_server: ServerProcess) -> None:
    result = nbrelay("run", "[draft] missing.ipynb", "--server", shared_server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: no notebook at [draft] missing.ipynb\n" in result.stderr  # as named: not read as markup
    assert "hint" not in result.stderr  # no such file here either


def test_run_of_a_file_of_this_machine_says_how_to_run_it(shared_server: ServerProcess, tmp_path: Path) -> None:
    """The server runs its workspace's notebooks; a path to a file of the client's machine (absolute, or one the
    workspace does not have) is refused with the ways to run that file."""
    mine = tmp_path / "mine.ipynb"
    mine.write_bytes((NOTEBOOKS / "tiny.ipynb").read_bytes())
    before = job_ids(shared_server)
    for given, refused in ((str(mine), "absolute paths are not accepted"), ("mine.ipynb", "no notebook at mine")):
        result = nbrelay("run", given, "--server", shared_server.url, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        said = " ".join(result.stderr.split())
        assert refused in said and f"upload it (nbrelay files put {given}) and run mine.ipynb" in said, said
        assert "or run it here with --local" in said, said
    assert job_ids(shared_server) == before


@pytest.mark.parametrize("name", ["with space.ipynb", "odd #1.ipynb", "what?.ipynb"])
def test_run_a_notebook_whose_name_needs_quoting_in_a_url(shared_server: ServerProcess, name: str) -> None:
    shutil.copy(shared_server.workspace / "tiny.ipynb", shared_server.workspace / name)
    before = job_ids(shared_server)
    result = nbrelay("run", name, "--server", shared_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    job = the_new_job(shared_server, before, result)
    assert job["notebook"] == name
    assert job["state"] == "succeeded"


@pytest.mark.parametrize(
    ("option", "value"), [("--timeout", "nan"), ("--timeout", "inf"), ("--cell-timeout", "0"), ("--timeout", "-1")]
)
def test_run_refuses_a_timeout_that_is_no_number_of_seconds(
    shared_server: ServerProcess, option: str, value: str
) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "tiny.ipynb", option, value, "--server", shared_server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"Invalid value for '{option}': '{value}' is not a number of seconds above 0" in result.stderr
    assert "Traceback" not in result.stderr and job_ids(shared_server) == before


def test_run_refuses_a_parameter_that_is_not_utf8(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    not_utf8 = os.fsdecode(b"label=\xed\xa0\x80")  # an encoded surrogate: bytes no UTF-8 decoder accepts
    result = nbrelay("run", "params.ipynb", "-p", not_utf8, "--server", shared_server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'label': not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr and job_ids(shared_server) == before


@pytest.mark.parametrize("path", ["../x.ipynb", "a/../../x.ipynb", "./../x.ipynb"])
def test_run_shows_the_servers_refusal_of_a_path_with_dots(shared_server: ServerProcess, path: str) -> None:
    result = nbrelay("run", path, "--server", shared_server.url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'..' is not allowed in paths" in result.stderr  # not squashed by the HTTP client into a 404


def test_run_against_an_unreachable_server_fails_clearly() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    result = nbrelay("run", "tiny.ipynb", "--server", address, timeout_s=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: cannot reach the server at {address}" in result.stderr
    assert "Traceback" not in result.stderr


# jobs ---------------------------------------------------------------------------------------------------------------
def test_jobs_json_lists_the_jobs(shared_server: ServerProcess) -> None:
    created = httpx.post(
        f"{shared_server.url}/api/jobs", json={"notebook": "params.ipynb", "parameters": {"label": "cli-json"}}
    ).json()
    shared_server.wait_for(created["id"], timeout_s=60)
    result = nbrelay("jobs", "--server", shared_server.url, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    api = httpx.get(f"{shared_server.url}/api/jobs", timeout=30).json()
    assert listed["total"] == api["total"]
    newest = listed["jobs"][0]
    assert newest["id"] == created["id"]
    assert newest["parameters"] == {"label": "cli-json"}
    assert newest["state"] == "succeeded"


def test_jobs_filters_by_state_and_notebook(shared_server: ServerProcess) -> None:
    created = httpx.post(f"{shared_server.url}/api/jobs", json={"notebook": "fail.ipynb"}).json()
    shared_server.wait_for(created["id"], timeout_s=60)
    result = nbrelay("jobs", "--server", shared_server.url, "--json", "--state", "failed", "--notebook", "fail.ipynb")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert created["id"] in [j["id"] for j in listed["jobs"]]
    assert {(j["state"], j["notebook"]) for j in listed["jobs"]} == {("failed", "fail.ipynb")}


def test_jobs_table(shared_server: ServerProcess) -> None:
    created = httpx.post(f"{shared_server.url}/api/jobs", json={"notebook": "params.ipynb"}).json()
    shared_server.wait_for(created["id"], timeout_s=60)
    result = nbrelay("jobs", "--server", shared_server.url)
    assert result.returncode == 0, result.stderr
    assert "notebook" in result.stdout and "report" in result.stdout
    row = next(line for line in result.stdout.splitlines() if f"│ {created['id']} " in line)
    assert "params.ipynb" in row and f"{shared_server.url}/api/jobs/{created['id']}/report" in row, row
    # In a terminal too narrow for the addresses, they follow the table whole, one a line.
    narrow = nbrelay("jobs", "--server", shared_server.url, "--limit", "3", env={"COLUMNS": "80"}).stdout
    assert all(len(line) <= 80 for line in narrow.splitlines() if "│" in line), narrow
    address = f"report of job {created['id']}: {shared_server.url}/api/jobs/{created['id']}/report"
    assert address in narrow.splitlines(), narrow


def test_jobs_with_an_unknown_state_fails(shared_server: ServerProcess) -> None:
    result = nbrelay("jobs", "--server", shared_server.url, "--state", "bogus")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error:" in result.stderr and "bogus" in result.stderr


@pytest.mark.postgres
def test_serve_says_in_a_line_why_its_database_cannot_be_opened(tmp_path: Path) -> None:
    """Found from outside: a database name that did not exist was a 200-line traceback before the server gave up."""
    url = "postgresql://postgres:secret@127.0.0.1:5432/nbrelay_no_such_database"
    args = ["serve", "--port", "9", "--data-dir", str(tmp_path / "data"), "--workspace", str(tmp_path / "ws")]
    result = nbrelay(*args, env={"NBRELAY_DATABASE_URL": url}, timeout_s=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: the job database at postgresql://postgres:***@127.0.0.1:5432/nbrelay_no_such_database" in (
        result.stderr
    )
    assert 'database "nbrelay_no_such_database" does not exist' in result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_a_second_serve_of_one_sqlite_database_is_refused(server_factory: Any, tmp_path: Path) -> None:
    """Found from outside: a second `nbrelay serve` on the same data folder failed the first one's running job as
    left over from a crash ("interrupted: server restarted"), in silence, and ran jobs from the same queue."""
    first: ServerProcess = server_factory(workers=1)
    running = httpx.post(f"{first.url}/api/jobs", json={"notebook": "sleep.ipynb", "parameters": {"seconds": 30}})
    job = running.json()["id"]
    args = ["serve", "--port", str(free_port()), "--data-dir", str(first.data_dir), "--workspace", str(tmp_path)]
    result = nbrelay(*args, timeout_s=60)
    assert result.returncode == 2, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"is in use by another nbrelay serve (pid {first.process.pid})" in said, said
    assert "--data-dir" in said and "Traceback" not in result.stderr
    assert httpx.get(f"{first.url}/api/jobs/{job}").json()["state"] in ("queued", "running")
    first.process.kill()  # gone, however it went: the database is free again
    first.process.wait()
    second = ServerProcess(workspace=first.workspace, data_dir=first.data_dir, workers=1).start()
    try:
        assert httpx.get(f"{second.url}/api/jobs/{job}").json()["state"] == "failed"  # what the crash left
    finally:
        second.stop()


# run --local --------------------------------------------------------------------------------------------------------
def test_run_local_writes_the_report_next_to_the_notebook(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks-copy"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / "tiny.ipynb", folder / "tiny.ipynb")
    result = nbrelay("run", "--local", str(folder / "tiny.ipynb"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    report = folder / "tiny.html"
    assert report.is_file()
    html = report.read_text()
    assert "<html" in html.lower()
    # Nothing but the report is left next to the notebook.
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.html", "tiny.ipynb"]


def test_run_local_keeps_its_files_where_asked_and_says_what_it_replaces(tmp_path: Path) -> None:
    """Found from outside: --local replaced NAME.html next to the notebook without a word, and the executed
    notebook went with the temporary folder."""
    folder = tmp_path / "nb"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / "tiny.ipynb", folder / "tiny.ipynb")
    (tmp_path / "mine.html").write_text("MY FILE")
    args = ["-o", str(tmp_path / "mine.html"), "--executed", str(tmp_path / "ran.ipynb")]
    result = nbrelay("run", "--local", str(folder / "tiny.ipynb"), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"replacing {tmp_path / 'mine.html'}" in result.stderr
    assert "<html" in (tmp_path / "mine.html").read_text().lower()
    assert (
        '"outputs"' in (tmp_path / "ran.ipynb").read_text()
        and f"executed notebook: {tmp_path / 'ran.ipynb'}" in result.stdout
    )
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.ipynb"]  # nothing written next to it this time
    on_a_server = nbrelay("run", "tiny.ipynb", "-o", "x.html", cwd=tmp_path)
    assert on_a_server.returncode == 2 and "only with --local" in on_a_server.stderr


def test_run_local_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = nbrelay("run", "--local", str(tmp_path / "nope.ipynb"), timeout_s=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: no notebook at {tmp_path / 'nope.ipynb'}" in result.stderr


# tokens -------------------------------------------------------------------------------------------------------------
def test_token_list_as_json(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert nbrelay("token", "create", "ada", "--admin", *data).returncode == 0
    assert nbrelay("token", "create", "bob", *data).returncode == 0
    result = nbrelay("token", "list", "--json", *data)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(t["user"], t["admin"], t["last_used_at"]) for t in listed] == [("ada", True, None), ("bob", False, None)]
    assert all(t["created_at"].endswith("Z") for t in listed)
    assert "token" not in {key for t in listed for key in t}  # names and dates, never the tokens
