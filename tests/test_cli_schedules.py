"""`nbrelay schedules …` against a real server (in-process, tests/live.py), the commands run through Typer's
runner in this process: the same code as `python -m nbrelay schedules …`, without a Python start per command."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from nbrelay import cli
from tests.live import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import shutil

    from tests.conftest import NOTEBOOKS

    root = tmp_path_factory.mktemp("cli-schedules")
    shutil.copytree(NOTEBOOKS, root / "workspace")
    started = LiveServer(root / "workspace", root / "data").start()
    yield started
    started.stop()


def nbrelay(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args), prog_name="nbrelay", env={"COLUMNS": "250", "NO_COLOR": "1"})


def schedules(server: LiveServer, *args: str) -> Result:
    return nbrelay("schedules", *args, "--server", server.url)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def fails(result: Result, message: str) -> None:
    """Exit code 2 and the server's message on stderr, no traceback."""
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    assert "error:" in result.stderr and message in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_help_shows_examples() -> None:
    text = ok(nbrelay("schedules", "--help"))
    for command in ("list", "add", "edit", "pause", "resume", "run-now", "rm"):
        assert command in text
    assert 'nbrelay schedules add reports/daily.ipynb --cron "0 9 * * MON-FRI" --tz Europe/Berlin' in text
    assert "nbrelay schedules run-now 3" in ok(nbrelay("schedules", "run-now", "--help"))
    assert "nbrelay schedules list --json" in ok(nbrelay("schedules", "list", "-h"))


def test_add_list_pause_resume_edit_run_now_and_rm(server: LiveServer) -> None:
    added = ok(
        schedules(
            server,
            "add",
            "params.ipynb",
            "--cron",
            "0 9 * * MON-FRI",
            "--tz",
            "Europe/Berlin",
            "-p",
            "label={{ tick_date }}",
            "-p",
            "n=3",
            "--notify-email",
            "ops@example.com",
            "--notify-on",
            "failed",
        )
    )
    match = re.search(r"schedule (\d+) active: params.ipynb  0 9 \* \* MON-FRI \(Europe/Berlin\)", added)
    assert match, added
    schedule_id = match.group(1)
    assert len(re.findall(r"next \d{4}-\d\d-\d\dT09:00:00\+0[12]:00", added)) == 5

    listed = json.loads(ok(schedules(server, "list", "--json")))
    (mine,) = [s for s in listed if str(s["id"]) == schedule_id]
    assert mine["parameters"] == {"label": "{{ tick_date }}", "n": 3}  # n read as the notebook's int
    assert (mine["notify_email"], mine["notify_on"]) == (["ops@example.com"], ["failed"])
    # The table's console is made as the command prints, so it takes the runner's COLUMNS (250): at the width of
    # the terminal the tests run in, the cron would wrap over lines (cells are never cut).
    table = ok(schedules(server, "list"))
    assert "0 9 * * MON-FRI" in table and "Europe/Berlin" in table and "active" in table

    assert "paused" in ok(schedules(server, "pause", schedule_id))
    assert "active" in ok(schedules(server, "resume", schedule_id))
    edited = ok(schedules(server, "edit", schedule_id, "--cron", "@daily", "--tz", "UTC", "--overlap", "queue"))
    assert "0 0 * * * (UTC)" in edited and "next " in edited
    assert "n" in ok(schedules(server, "edit", schedule_id, "-p", "n=4"))
    assert httpx.get(f"{server.url}/api/schedules/{schedule_id}").json()["parameters"] == {"n": 4}

    ran = ok(schedules(server, "run-now", schedule_id))
    job_id = re.search(r"job (\d+) queued", ran).group(1)  # type: ignore[union-attr]
    job: dict[str, Any] = httpx.get(f"{server.url}/api/jobs/{job_id}").json()
    assert (job["schedule_id"], job["parameters"]) == (int(schedule_id), {"n": 4})

    assert f"schedule {schedule_id} deleted" in ok(schedules(server, "rm", schedule_id))
    fails(schedules(server, "rm", schedule_id), f"no schedule {schedule_id}")


def test_refusals_print_the_servers_message(server: LiveServer) -> None:
    fails(schedules(server, "add", "tiny.ipynb", "--cron", "0 9 * *"), "has 4 fields; expected 5")
    fails(schedules(server, "add", "tiny.ipynb", "--cron", "@daily", "--tz", "Mars/Base"), "unknown time zone")
    fails(schedules(server, "pause", "999999"), "no schedule 999999")
    result = schedules(server, "add", "tiny.ipynb")
    assert result.exit_code == 2 and "--cron" in result.stderr


def test_schedules_of_a_server_that_is_not_there(tmp_path: Path) -> None:
    fails(nbrelay("schedules", "list", "--server", "http://127.0.0.1:9"), "cannot reach the server")
