"""`nbrelay schedules …`: notebooks that run on a cron expression (list, add, edit, pause, resume, run-now, rm),
through the server's REST API. Errors print the server's message and exit 2."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nbrelay.cli_options import DEFAULT_SERVER, ServerOption, TokenOption, connected, parse_parameters
from nbrelay.cli_style import command_group, console, escape, print_json, seconds

if TYPE_CHECKING:
    from nbrelay.client import Client

HELP = """Schedules: a notebook that runs on a cron expression in a time zone.

Examples:

\b
  nbrelay schedules add reports/daily.ipynb --cron "0 9 * * MON-FRI" --tz Europe/Berlin -p day="{{ tick_date }}"
  nbrelay schedules add etl.ipynb --cron @hourly --overlap queue --missed skip --notify-email ops@example.com
  nbrelay schedules list --json
  nbrelay schedules pause 3
  nbrelay schedules resume 3
  nbrelay schedules edit 3 --cron "30 6 * * *" -p limit=100
  nbrelay schedules run-now 3
  nbrelay schedules rm 3
"""

schedules_app = command_group(HELP)

ScheduleArg = Annotated[int, typer.Argument(help="the schedule's id (nbrelay schedules list)", min=1)]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "-p",
        "--param",
        metavar="KEY=VALUE",
        help="a parameter (repeat for more); in text, {{ tick_date }}, {{ tick_time }}, {{ tick_iso }}, … become "
        "the tick's time",
    ),
]
CronOption = Annotated[
    str | None, typer.Option("--cron", help='five fields ("0 9 * * MON-FRI") or @hourly @daily @weekly @monthly …')
]
TzOption = Annotated[str | None, typer.Option("--tz", "--timezone", help="IANA time zone, e.g. Europe/Berlin")]
NameOption = Annotated[str | None, typer.Option("--name", help="a label for people")]
OverlapOption = Annotated[
    str | None, typer.Option("--overlap", help="while the previous run is unfinished: skip (default) or queue")
]
MissedOption = Annotated[
    str | None, typer.Option("--missed", help="ticks missed while the service was down: run_once (default) or skip")
]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout-s", help="whole-run timeout in seconds", parser=seconds, metavar="SECONDS")
]
CellTimeoutOption = Annotated[
    float | None,
    typer.Option("--cell-timeout-s", help="per-cell timeout in seconds", parser=seconds, metavar="SECONDS"),
]
EmailOption = Annotated[list[str] | None, typer.Option("--notify-email", help="an address to tell (repeat for more)")]
NotifyOnOption = Annotated[
    list[str] | None, typer.Option("--notify-on", help="succeeded, failed, cancelled or timed_out (repeat for more)")
]


def _parameters(client: Client, notebook: str, pairs: list[str]) -> dict[str, Any]:
    if not pairs:
        return {}
    declared = {p["name"]: p["type"] for p in client.parameters(notebook)["parameters"]}
    return parse_parameters(pairs, declared)


def _fields(**given: Any) -> dict[str, Any]:
    """The options given (not None, not empty lists left out unless given)."""
    return {key: value for key, value in given.items() if value is not None}


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M %z")


def _show(schedule: dict[str, Any]) -> None:
    state = "[yellow]paused[/yellow]" if schedule["state"] == "paused" else "[green]active[/green]"
    out = console()
    out.print(
        f"schedule {schedule['id']} {state}: {escape(schedule['notebook'])}  "
        f"{escape(schedule['cron'])} ({escape(schedule['timezone'])})",
        highlight=False,
    )
    for run in schedule["next_runs"]:
        out.print(f"  next {run}", highlight=False)


@schedules_app.command("list")
def list_schedules(
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the server's JSON (for scripts)")] = False,
) -> None:
    """List your schedules: cron, time zone, state, next run and last run.

    \b
      nbrelay schedules list
      nbrelay schedules list --json | jq '.[].next_runs[0]'
    """
    from rich.table import Table

    with connected(server, token) as client:
        found = client.schedules()
    if as_json:
        print_json(found)
        return
    table = Table("id", "notebook", "cron", "time zone", "state", "next run", "last run")
    for s in found:
        last = s["last_run"]
        table.add_row(
            str(s["id"]),
            escape(s["name"] or s["notebook"]),
            escape(s["cron"]),
            escape(s["timezone"]),
            s["state"],
            s["next_runs"][0] if s["next_runs"] else "-",
            f"job {last['job_id']} {last['state']} {_when(last['created_at'])}" if last else "-",
        )
    console().print(table)


@schedules_app.command("add")
def add(
    notebook: Annotated[str, typer.Argument(help="the notebook's path in the workspace")],
    cron: CronOption = None,
    tz: TzOption = None,
    pairs: ParamOption = None,
    name: NameOption = None,
    paused: Annotated[bool, typer.Option("--paused", help="create it paused")] = False,
    overlap: OverlapOption = None,
    missed: MissedOption = None,
    timeout_s: TimeoutOption = None,
    cell_timeout_s: CellTimeoutOption = None,
    notify_email: EmailOption = None,
    notify_on: NotifyOnOption = None,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Create a schedule; prints its id and next run times.

    \b
      nbrelay schedules add daily.ipynb --cron "0 9 * * MON-FRI" --tz Europe/Berlin
      nbrelay schedules add etl.ipynb --cron @hourly -p day="{{ tick_date }}" --overlap queue
    """
    if not cron:
        raise typer.BadParameter('give --cron, e.g. --cron "0 9 * * MON-FRI" or --cron @daily', param_hint="--cron")
    with connected(server, token) as client:
        fields = _fields(
            name=name,
            overlap=overlap,
            missed=missed,
            timeout_s=timeout_s,
            cell_timeout_s=cell_timeout_s,
            notify_email=notify_email,
            notify_on=notify_on,
        )
        parameters = _parameters(client, notebook, pairs or [])
        created = client.add_schedule(notebook, cron, tz or "UTC", parameters=parameters, enabled=not paused, **fields)
    _show(created)


@schedules_app.command("edit")
def edit(
    schedule_id: ScheduleArg,
    cron: CronOption = None,
    tz: TzOption = None,
    pairs: ParamOption = None,
    notebook: Annotated[str | None, typer.Option("--notebook", help="run another notebook")] = None,
    name: NameOption = None,
    overlap: OverlapOption = None,
    missed: MissedOption = None,
    timeout_s: TimeoutOption = None,
    cell_timeout_s: CellTimeoutOption = None,
    notify_email: EmailOption = None,
    notify_on: NotifyOnOption = None,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Change a schedule: only the options given change (-p replaces all parameters).

    \b
      nbrelay schedules edit 3 --cron "30 6 * * *" --tz America/New_York
      nbrelay schedules edit 3 -p limit=100 --missed skip
    """
    with connected(server, token) as client:
        changes = _fields(
            cron=cron,
            timezone=tz,
            notebook=notebook,
            name=name,
            overlap=overlap,
            missed=missed,
            timeout_s=timeout_s,
            cell_timeout_s=cell_timeout_s,
            notify_email=notify_email,
            notify_on=notify_on,
        )
        if pairs:
            changes["parameters"] = _parameters(client, notebook or client.schedule(schedule_id)["notebook"], pairs)
        if not changes:
            raise typer.BadParameter("nothing to change: give at least one option (see --help)")
        _show(client.edit_schedule(schedule_id, **changes))


@schedules_app.command("pause")
def pause(schedule_id: ScheduleArg, server: ServerOption = DEFAULT_SERVER, token: TokenOption = None) -> None:
    """Pause a schedule: no runs until it is resumed.

    \b
      nbrelay schedules pause 3
    """
    with connected(server, token) as client:
        _show(client.edit_schedule(schedule_id, enabled=False))


@schedules_app.command("resume")
def resume(schedule_id: ScheduleArg, server: ServerOption = DEFAULT_SERVER, token: TokenOption = None) -> None:
    """Resume a paused schedule (the ticks that fell while it was paused are not run).

    \b
      nbrelay schedules resume 3
    """
    with connected(server, token) as client:
        _show(client.edit_schedule(schedule_id, enabled=True))


@schedules_app.command("run-now")
def run_now(schedule_id: ScheduleArg, server: ServerOption = DEFAULT_SERVER, token: TokenOption = None) -> None:
    """Run the schedule's notebook now, besides its ticks; prints the job's id.

    \b
      nbrelay schedules run-now 3
    """
    with connected(server, token) as client:
        job = client.run_schedule(schedule_id)
    console().print(f"job {job['id']} queued (schedule {schedule_id})", highlight=False)


@schedules_app.command("rm")
def rm(schedule_id: ScheduleArg, server: ServerOption = DEFAULT_SERVER, token: TokenOption = None) -> None:
    """Delete a schedule (its jobs and reports stay).

    \b
      nbrelay schedules rm 3
    """
    with connected(server, token) as client:
        client.delete_schedule(schedule_id)
    console().print(f"schedule {schedule_id} deleted", highlight=False)
