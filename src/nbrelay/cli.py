"""The `nbrelay` command: serve, run a notebook (on a server or locally), list jobs."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nbrelay import __version__
from nbrelay.cli_options import DEFAULT_SERVER, ServerOption, TokenOption, connected, parse_parameters
from nbrelay.cli_style import (
    command_group,
    console,
    duration,
    escape,
    fail,
    full_url,
    print_json,
    print_with_addresses,
    seconds,
    when,
)
from nbrelay.config import Settings, hide_password
from nbrelay.errors import NbrelayError
from nbrelay.models import TERMINAL_EVENTS

if TYPE_CHECKING:  # the client (httpx, websockets) and rich are imported by the commands that use them
    from rich.progress import ProgressColumn

    from nbrelay.client import Client

app = command_group("Run Jupyter notebooks as background jobs, with live push to the browser.")

# The settings' own defaults (without NBRELAY_* variables), shown in --help; the options read the variables.
DEFAULTS = Settings.model_construct()


def _print_version(value: bool) -> None:
    if value:
        print(f"nbrelay {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", is_eager=True, callback=_print_version)
    ] = False,
) -> None:
    pass


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="NBRELAY_HOST", help="address to listen on")] = DEFAULTS.host,
    port: Annotated[int, typer.Option(envvar="NBRELAY_PORT", help="port")] = DEFAULTS.port,
    workspace: Annotated[
        Path, typer.Option(envvar="NBRELAY_WORKSPACE", help="folder of notebooks")
    ] = DEFAULTS.workspace,
    data_dir: Annotated[Path, typer.Option(envvar="NBRELAY_DATA_DIR", help="database and reports")] = DEFAULTS.data_dir,
    workers: Annotated[
        int, typer.Option(envvar="NBRELAY_WORKERS", help="notebooks run at once (default: the CPU count)")
    ] = DEFAULTS.workers,
    examples: Annotated[bool, typer.Option(help="put the example notebooks in an empty workspace")] = True,
) -> None:
    """Start the server (SQLite and local worker processes unless configured otherwise)."""
    from pydantic import ValidationError

    from nbrelay.app import create_app, seed_workspace
    from nbrelay.config import settings_problem
    from nbrelay.server import Server, server_config

    overrides: dict[str, Any] = {"host": host, "port": port, "workspace": workspace, "data_dir": data_dir}
    overrides["workers"] = workers
    err = console(stderr=True)
    _warn_unknown_names(err)  # first: a misspelt name may be why the settings are refused
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise fail(settings_problem(exc)) from None
    if (problem := _database_problem(settings.database_url)) is not None:
        raise fail(problem, "check NBRELAY_DATABASE_URL: the server, the database and its name")
    _hold_the_database(settings)
    shared = settings.shared_dir if settings.per_user_folders else ""
    if examples and seed_workspace(settings.workspace, into=shared):
        err.print(f"[dim]example notebooks copied to {settings.workspace / shared}[/dim]")
    runs = f"workers {settings.workers}" if settings.executor == "local" else "jobs run on `nbrelay worker` machines"
    err.print(
        f"nbrelay on [bold]http://{settings.host}:{settings.port}[/bold]  workspace {settings.workspace}  "
        f"data {settings.data_dir}  database {escape(hide_password(settings.database_url))}  {runs}"
    )
    Server(server_config(create_app(settings), settings)).run()


def _hold_the_database(settings: Settings) -> None:
    """On SQLite this server is the only one: a second `nbrelay serve` of the same database file is refused (it
    would fail the first one's running jobs as left over from a crash, and share its queue)."""
    from sqlalchemy.engine import make_url

    from nbrelay.runtime import hold_lock, lock_holder

    if not settings.database_url.startswith("sqlite"):
        return
    database = make_url(settings.database_url).database
    if not database or database == ":memory:":
        return
    lock = Path(f"{database}.serve.lock")
    if hold_lock(lock) is None:  # held until this process ends
        raise fail(
            f"the job database {database} is in use by another nbrelay serve ({lock_holder(lock)})",
            "stop that server first, or give this one a data folder of its own (--data-dir)",
        )


def _database_problem(url: str) -> str | None:
    """Why the job database cannot be opened, in a line; None once it opens with its schema up to date (found from
    outside: a database name that did not exist was a 200-line traceback before the server gave up)."""
    from nbrelay.store import open_store

    async def open_and_close() -> None:
        store = open_store(url)
        try:
            await store.start()
        finally:
            await store.close()

    try:
        asyncio.run(open_and_close())
    except Exception as exc:
        where = hide_password(url)
        reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"the job database at {where} cannot be opened: {reason}"
    return None


@app.command()
def worker(
    workspace: Annotated[
        Path, typer.Option(envvar="NBRELAY_WORKSPACE", help="the shared folder of notebooks")
    ] = DEFAULTS.workspace,
    workers: Annotated[
        int, typer.Option(envvar="NBRELAY_WORKERS", help="slots: notebooks run at once here (default: the CPU count)")
    ] = DEFAULTS.workers,
    loglevel: Annotated[str, typer.Option(help="Celery's log level")] = "INFO",
) -> None:
    """Run jobs of a multi-node installation on this machine: a Celery worker with NBRELAY_WORKERS slots.

    It reads the same NBRELAY_* settings as `nbrelay serve` (one environment file serves both): the database
    (PostgreSQL), NBRELAY_BROKER_URL (Redis: events), NBRELAY_CELERY_BROKER_URL (default: that Redis), the
    shared workspace and NBRELAY_REPORTS_DIR. Example:

    \b
      NBRELAY_DATABASE_URL=postgresql://nbrelay@db/nbrelay NBRELAY_BROKER_URL=redis://redis:6379/0 nbrelay worker
    """
    from pydantic import ValidationError

    from nbrelay.config import settings_problem
    from nbrelay.executor.worker_host import run_worker

    overrides: dict[str, Any] = {"workspace": workspace, "workers": workers, "executor": "celery"}
    err = console(stderr=True)
    _warn_unknown_names(err)  # first: a misspelt name may be why the settings are refused
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise fail(settings_problem(exc)) from None
    err.print(
        f"nbrelay worker: {settings.workers} slots  workspace {settings.workspace}  reports {settings.reports_dir}  "
        f"database {escape(hide_password(settings.database_url))}  broker {settings.celery_broker.split('@')[-1]}"
    )
    run_worker(settings, loglevel=loglevel)


def _warn_unknown_names(err: Any) -> None:
    """A line for each NBRELAY_* variable that nothing reads: a misspelt setting is otherwise silently its
    default."""
    from nbrelay.config import unknown_names

    for line in unknown_names(os.environ):
        err.print(f"[yellow]warning:[/yellow] {escape(line)}")


def _print_outcome(job: dict[str, Any], server: str = "") -> int:
    """The job's end, and its report's full address (a failed run's too: it shows where the run stopped)."""
    state = job["state"]
    out = console()
    if state == "succeeded":
        out.print(f"[green]job {job['id']} succeeded[/green] in {duration(job.get('duration_s') or 0)}")
    else:
        error = job.get("error") or {}
        out.print(f"[red]job {job['id']} {state}[/red]: {error.get('reason', '')}")
        if error.get("ename"):
            out.print(f"  {error['ename']}: {error.get('evalue', '')}", markup=False, highlight=False)
    if job.get("report_url"):
        print(f"report: {full_url(server, job['report_url'])}")
    return 0 if state == "succeeded" else 1


def _follow(progress_of: Any, job_id: int, total_hint: int = 0) -> dict[str, Any]:
    """Show a per-cell progress bar while polling; returns the final job."""
    from rich.progress import Progress

    with Progress(*_columns(), console=console(stderr=True)) as bar:
        task = bar.add_task(f"job {job_id} queued", total=total_hint or None)
        while True:
            job = progress_of(job_id)
            progress = job.get("progress") or {}
            total = progress.get("total") or None
            label = f"job {job_id} {job['state']}"
            if progress.get("phase") == "starting_kernel":
                label = f"job {job_id} starting kernel"  # not 0/0: no cell is counted before the kernel is up
            if job["state"] == "queued" and job.get("queue_position"):
                label += f" (#{job['queue_position']})"
            bar.update(task, description=label, total=total, completed=progress.get("cell", 0))
            if job["state"] not in ("queued", "running"):
                return job
            import time

            time.sleep(0.2)


def _follow_push(client: Client, job_id: int) -> dict[str, Any]:
    """A per-cell progress bar fed by push events, with the job's output shown as it streams."""
    from rich.progress import Progress

    with Progress(*_columns(), console=console(stderr=True)) as bar:
        task = bar.add_task(f"job {job_id}", total=None)
        for message in client.follow(job_id):
            if message.get("op") == "state":
                job = message["job"]
                progress = job["progress"]
                bar.update(task, total=progress["total"] or None, completed=progress["cell"])
                starting = progress.get("phase") == "starting_kernel"
                bar.update(task, description=f"job {job_id} {'starting kernel' if starting else job['state']}")
                continue
            data, kind = message.get("data", {}), message.get("type", "")
            if kind == "job.started":
                bar.update(task, total=data.get("total") or None, description=f"job {job_id} running")
            elif kind == "job.starting":
                bar.update(task, total=None, description=f"job {job_id} starting kernel")
            elif kind == "job.progress":
                bar.update(task, total=data["total"], completed=data["cell"])
            elif kind == "job.output":
                bar.console.print(data.get("text", ""), end="", markup=False, highlight=False)
            elif kind in TERMINAL_EVENTS:
                bar.update(task, description=f"job {job_id} {data.get('state', kind[4:])}")
            elif message.get("op") == "recovered":
                job = client.job(job_id)
                bar.update(task, completed=job["progress"]["cell"])
    return client.job(job_id)


def _columns() -> list[ProgressColumn]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    return [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]


@app.command()
def run(
    notebook: Annotated[str, typer.Argument(help="notebook path in the workspace (with --local: any path)")],
    param: Annotated[
        list[str] | None, typer.Option("-p", "--param", metavar="KEY=VALUE", help="a parameter (repeat for more)")
    ] = None,
    server: ServerOption = DEFAULT_SERVER,
    local: Annotated[bool, typer.Option("--local", help="run here, without a server")] = False,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="whole-job timeout; default: the server's, if any", parser=seconds, metavar="SECONDS"
        ),
    ] = None,
    cell_timeout_s: Annotated[
        float | None,
        typer.Option(
            "--cell-timeout", help="per-cell timeout; default: the server's, if any", parser=seconds, metavar="SECONDS"
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow/--poll", help="live progress by push, or by polling")] = True,
    token: TokenOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="with --local: the HTML report's file (default: NAME.html next to the notebook)"
        ),
    ] = None,
    executed: Annotated[
        Path | None, typer.Option("--executed", help="with --local: keep the executed notebook in this file too")
    ] = None,
) -> None:
    """Run a notebook with parameters, show per-cell progress, exit non-zero when the job does not succeed."""
    pairs = param or []
    if local:
        run_local = _run_local(Path(notebook), pairs, timeout_s, cell_timeout_s, output=output, executed=executed)
        raise typer.Exit(asyncio.run(run_local))
    if output is not None or executed is not None:
        raise typer.BadParameter(
            "only with --local: a server keeps the job's files (nbrelay reports)", param_hint="--output/--executed"
        )
    with connected(server, token) as client:
        declared = {p["name"]: p["type"] for p in _parameters_of(client, notebook)}
        job = client.submit(
            notebook, parse_parameters(pairs, declared), timeout_s=timeout_s, cell_timeout_s=cell_timeout_s
        )
        final = _follow_push(client, job["id"]) if follow else _follow(client.job, job["id"])
    raise typer.Exit(_print_outcome(final, server))


def _parameters_of(client: Client, notebook: str) -> list[dict[str, Any]]:
    """The notebook's declared parameters. A server that has no such notebook while this machine has that file
    hears how to run the file of this machine: the server runs the notebooks of its workspace."""
    try:
        return client.parameters(notebook)["parameters"]
    except NbrelayError as exc:
        if exc.code not in ("notebook_not_found", "path_refused") or not Path(notebook).is_file():
            raise
        name = Path(notebook).name
        raise fail(
            exc.message,
            f"{notebook} is a file of this machine, and the server runs the notebooks of its workspace: upload it "
            f"(nbrelay files put {notebook}) and run {name}, or run it here with --local",
        ) from None


async def _run_local(
    path: Path,
    pairs: list[str],
    timeout_s: float | None,
    cell_timeout_s: float | None,
    *,
    output: Path | None = None,
    executed: Path | None = None,
) -> int:
    """Run one notebook with an in-process service on a temporary data dir, workspace = the notebook's folder; the
    report is kept in `output` (NAME.html next to the notebook) and, if asked, the executed notebook in `executed`,
    both of which the temporary folder would otherwise take with it."""
    from nbrelay.api.schemas import job_json
    from nbrelay.jobs import SubmitRequest, User, open_job_service
    from nbrelay.store import open_store

    path = await asyncio.to_thread(path.resolve)
    if not await asyncio.to_thread(path.is_file):
        raise fail(f"no notebook at {path}")
    with tempfile.TemporaryDirectory(prefix="nbrelay-") as data:
        settings = Settings(
            workspace=path.parent,
            data_dir=Path(data),
            workers=1,
            kernel_pool_size=0,
            executor="local",
            broker_url="memory://",
        )
        store = open_store(settings.database_url)
        await store.start()
        service = open_job_service(settings, store)
        await service.start()
        try:
            info = service.inspect(path.name)
            declared = {p.name: p.type for p in info.parameters or []}
            request = SubmitRequest(path.name, parse_parameters(pairs, declared), timeout_s, cell_timeout_s)
            user = User(settings.local_user, admin=True)
            job = await service.submit(user, request)
            loop = asyncio.get_running_loop()

            def progress_of(job_id: int) -> dict[str, Any]:
                found = asyncio.run_coroutine_threadsafe(service.get(user, job_id), loop).result()
                return job_json(found)

            final = await asyncio.to_thread(_follow, progress_of, job.id)
            done = await service.get(user, job.id)
            kept = [(done.report_path, output or path.with_suffix(".html")), (done.output_path, executed)]
            for made, wanted in kept:
                if made and wanted is not None:
                    if await asyncio.to_thread(wanted.exists):  # as `jupyter nbconvert` does, but said
                        console(stderr=True).print(f"[dim]replacing {wanted}[/dim]")
                    await asyncio.to_thread(shutil.copyfile, made, wanted)
            if done.report_path:
                final["report_url"] = str(output or path.with_suffix(".html"))
            if done.output_path and executed is not None:
                print(f"executed notebook: {executed}")
            return _print_outcome(final)
        except NbrelayError as exc:
            raise fail(exc.message, exc.hint) from None
        finally:
            await service.stop()
            await store.close()


@app.command()
def jobs(
    server: ServerOption = DEFAULT_SERVER,
    state: Annotated[
        str | None, typer.Option(help="only jobs in these states, e.g. running,failed or unfinished; default: any")
    ] = None,
    notebook: Annotated[str | None, typer.Option(help="only this notebook's jobs; default: every notebook's")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print the server's JSON (for scripts)")] = False,
    token: TokenOption = None,
) -> None:
    """List jobs, newest first, with the address of each report."""
    from rich.table import Table

    with connected(server, token) as client:
        found = client.jobs(state=state, notebook=notebook, limit=limit)
    if as_json:
        print_json(found)
        return
    table = Table("id", "state", "notebook", "progress", "created", "duration", "report")
    for column in table.columns:
        column.overflow = "fold"  # wrapped, never cut
    addresses = []
    colors = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow", "running": "cyan"}
    for job in found["jobs"]:
        progress = job["progress"]
        color = colors.get(job["state"], "white")
        table.add_row(
            str(job["id"]),
            f"[{color}]{job['state']}[/{color}]",
            escape(job["notebook"]),
            "starting kernel"
            if progress.get("phase") == "starting_kernel"
            else (f"{progress['cell']}/{progress['total']}" if progress["total"] else ""),
            when(job["created_at"]),
            duration(job.get("duration_s")),
            escape(full_url(server, job.get("report_url"))),
        )
        addresses.append((f"report of job {job['id']}", full_url(server, job.get("report_url"))))
    out = console()
    print_with_addresses(out, table, addresses)
    out.print(f"[dim]{len(found['jobs'])} of {found['total']}[/dim]")


token_app = command_group("API tokens for auth mode 'token' (stored hashed; shown once).")
app.add_typer(token_app, name="token")


def _store_settings(data_dir: Path | None) -> Any:
    return Settings(data_dir=data_dir) if data_dir else Settings()


async def _with_store(data_dir: Path | None, action: Any) -> Any:
    from nbrelay.store import open_store

    store = open_store(_store_settings(data_dir).database_url)
    await store.start()
    try:
        return await action(store)
    finally:
        await store.close()


DataDirOption = Annotated[Path, typer.Option(envvar="NBRELAY_DATA_DIR", help="the server's data dir")]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="the user the token logs in as")],
    admin: Annotated[bool, typer.Option(help="the user sees everyone's jobs")] = False,
    data_dir: DataDirOption = DEFAULTS.data_dir,
) -> None:
    """Create a token for NAME and print it (only now: it is stored hashed)."""
    from nbrelay.auth import hash_token, new_token

    token = new_token()
    try:
        asyncio.run(_with_store(data_dir, lambda store: store.add_token(name, hash_token(token), admin=admin)))
    except ValueError as exc:
        raise fail(str(exc)) from None
    who = f"[bold]{name}[/bold]{' (admin)' if admin else ''}"
    console(stderr=True).print(f"token for {who} — keep it, it is not shown again:")
    print(token)


@token_app.command("list")
def token_list(
    data_dir: DataDirOption = DEFAULTS.data_dir,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON (for scripts)")] = False,
) -> None:
    """List tokens (names and dates, never the tokens)."""
    from rich.table import Table

    from nbrelay.models import isoformat

    records = asyncio.run(_with_store(data_dir, lambda store: store.list_tokens()))
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "user": r.name,
                    "admin": r.admin,
                    "created_at": isoformat(r.created_at),
                    "last_used_at": isoformat(r.last_used_at),
                }
                for r in records
            ]
        )
        return
    table = Table("id", "user", "admin", "created", "last used")
    for r in records:
        used = r.last_used_at.isoformat(timespec="seconds") if r.last_used_at else ""
        table.add_row(str(r.id), r.name, "yes" if r.admin else "", r.created_at.isoformat(timespec="seconds"), used)
    console().print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="user whose tokens to revoke")],
    data_dir: DataDirOption = DEFAULTS.data_dir,
) -> None:
    """Revoke every token of NAME; running servers forget cached tokens, and end the sessions signed in with
    them, within 30 s."""
    count = asyncio.run(_with_store(data_dir, lambda store: store.delete_tokens(name)))
    console().print(f"revoked {count} token(s) of {name}")


from nbrelay.cli_files import files_app, reports_command  # noqa: E402
from nbrelay.cli_schedules import schedules_app  # noqa: E402
from nbrelay.cli_status import status_command  # noqa: E402

app.add_typer(files_app, name="files")
app.add_typer(schedules_app, name="schedules")
app.command("reports")(reports_command)
app.command("status")(status_command)


def main() -> None:  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
