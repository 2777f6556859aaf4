"""The `nbrelay` command: serve, run a notebook (on a server or locally), list jobs."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nbrelay.client import TERMINAL_EVENTS, Client, NbrelayError

app = typer.Typer(help="Run Jupyter notebooks as background jobs, with live push to the browser.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ServerOption = Annotated[str, typer.Option("--server", envvar="NBRELAY_SERVER", help="URL of the nbrelay server")]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [env NBRELAY_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env NBRELAY_PORT, default 8765]")] = None,
    workspace: Annotated[Path | None, typer.Option(help="folder of notebooks [env NBRELAY_WORKSPACE]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="database and reports [env NBRELAY_DATA_DIR]")] = None,
    workers: Annotated[int | None, typer.Option(help="notebooks run at once [env NBRELAY_WORKERS]")] = None,
    examples: Annotated[bool, typer.Option(help="put the example notebooks in an empty workspace")] = True,
) -> None:
    """Start the server (SQLite and local worker processes unless configured otherwise)."""
    from nbrelay.app import create_app, seed_workspace
    from nbrelay.config import Settings
    from nbrelay.server import Server, server_config

    overrides: dict[str, Any] = {"host": host, "port": port, "workspace": workspace, "data_dir": data_dir}
    overrides["workers"] = workers
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if examples and seed_workspace(settings.workspace):
        err.print(f"[dim]example notebooks copied to {settings.workspace}[/dim]")
    err.print(
        f"nbrelay on [bold]http://{settings.host}:{settings.port}[/bold]  workspace {settings.workspace}  "
        f"data {settings.data_dir}  workers {settings.workers}"
    )
    Server(server_config(create_app(settings), settings)).run()


def _coerce(value: str, type_name: str | None) -> Any:
    """A -p value as the notebook's declared type; untyped values are read as JSON when they parse."""
    base = (type_name or "").lower().removeprefix("optional[").split("[", 1)[0]
    if base == "str":
        return value
    if base == "bool":
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise typer.BadParameter(f"{value!r} is not true/false")
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _parse_parameters(pairs: list[str], declared: Mapping[str, str | None]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        parameters[name] = _coerce(value, declared.get(name))
    return parameters


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _print_outcome(job: dict[str, Any]) -> int:
    state = job["state"]
    if state == "succeeded":
        console.print(f"[green]job {job['id']} succeeded[/green] in {job.get('duration_s') or 0:.1f} s")
        if job.get("report_url"):
            console.print(f"report: {job['report_url']}")
        return 0
    error = job.get("error") or {}
    console.print(f"[red]job {job['id']} {state}[/red]: {error.get('reason', '')}")
    if error.get("ename"):
        console.print(f"  {error['ename']}: {error.get('evalue', '')}")
    return 1


def _follow(progress_of: Any, job_id: int, total_hint: int = 0) -> dict[str, Any]:
    """Show a per-cell progress bar while polling; returns the final job."""
    with Progress(*_columns(), console=err) as bar:
        task = bar.add_task(f"job {job_id} queued", total=total_hint or None)
        while True:
            job = progress_of(job_id)
            progress = job.get("progress") or {}
            total = progress.get("total") or None
            label = f"job {job_id} {job['state']}"
            if job["state"] == "queued" and job.get("queue_position"):
                label += f" (#{job['queue_position']})"
            bar.update(task, description=label, total=total, completed=progress.get("cell", 0))
            if job["state"] not in ("queued", "running"):
                return job
            import time

            time.sleep(0.2)


def _follow_push(client: Client, job_id: int) -> dict[str, Any]:
    """A per-cell progress bar fed by push events, with the job's output shown as it streams."""
    with Progress(*_columns(), console=err) as bar:
        task = bar.add_task(f"job {job_id}", total=None)
        for message in client.follow(job_id):
            if message.get("op") == "state":
                job = message["job"]
                progress = job["progress"]
                bar.update(task, total=progress["total"] or None, completed=progress["cell"])
                bar.update(task, description=f"job {job_id} {job['state']}")
                continue
            data, kind = message.get("data", {}), message.get("type", "")
            if kind == "job.started":
                bar.update(task, total=data.get("total") or None, description=f"job {job_id} running")
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


def _columns() -> list[Any]:
    return [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]


@app.command()
def run(
    notebook: Annotated[str, typer.Argument(help="notebook path in the workspace (with --local: any path)")],
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="a parameter as key=value")] = None,
    server: ServerOption = "http://127.0.0.1:8765",
    local: Annotated[bool, typer.Option("--local", help="run here, without a server")] = False,
    timeout_s: Annotated[float | None, typer.Option("--timeout", help="whole-job timeout, seconds")] = None,
    cell_timeout_s: Annotated[float | None, typer.Option("--cell-timeout", help="per-cell timeout, seconds")] = None,
    follow: Annotated[bool, typer.Option("--follow/--poll", help="live progress by push, or by polling")] = True,
    token: Annotated[str | None, typer.Option(envvar="NBRELAY_TOKEN", help="API token (auth mode token)")] = None,
) -> None:
    """Run a notebook with parameters, show per-cell progress, exit non-zero when the job does not succeed."""
    pairs = param or []
    if local:
        raise typer.Exit(asyncio.run(_run_local(Path(notebook), pairs, timeout_s, cell_timeout_s)))
    with Client(server, token=token) as client:
        try:
            declared = {p["name"]: p["type"] for p in client.parameters(notebook)["parameters"]}
            job = client.submit(
                notebook, _parse_parameters(pairs, declared), timeout_s=timeout_s, cell_timeout_s=cell_timeout_s
            )
            final = _follow_push(client, job["id"]) if follow else _follow(client.job, job["id"])
        except NbrelayError as exc:
            raise _fail(exc.message) from None
    raise typer.Exit(_print_outcome(final))


async def _run_local(path: Path, pairs: list[str], timeout_s: float | None, cell_timeout_s: float | None) -> int:
    """Run one notebook with an in-process service on a temporary data dir, workspace = the notebook's folder."""
    from nbrelay.api.schemas import job_json
    from nbrelay.config import Settings
    from nbrelay.errors import NbrelayError as ServiceError
    from nbrelay.executor.local import LocalExecutor
    from nbrelay.jobs import JobService, SubmitRequest, User
    from nbrelay.store import open_store

    path = await asyncio.to_thread(path.resolve)
    if not await asyncio.to_thread(path.is_file):
        raise _fail(f"no notebook at {path}")
    with tempfile.TemporaryDirectory(prefix="nbrelay-") as data:
        settings = Settings(workspace=path.parent, data_dir=Path(data), workers=1, kernel_pool_size=0)
        store = open_store(settings.database_url)
        await store.start()
        service = JobService(settings, store, LocalExecutor(settings))
        await service.start()
        try:
            info = service.inspect(path.name)
            declared = {p.name: p.type for p in info.parameters or []}
            request = SubmitRequest(path.name, _parse_parameters(pairs, declared), timeout_s, cell_timeout_s)
            user = User(settings.local_user, admin=True)
            job = await service.submit(user, request)
            loop = asyncio.get_running_loop()

            def progress_of(job_id: int) -> dict[str, Any]:
                found = asyncio.run_coroutine_threadsafe(service.get(user, job_id), loop).result()
                return job_json(found)

            final = await asyncio.to_thread(_follow, progress_of, job.id)
            if final.get("report_url"):
                report = path.with_suffix(".html")
                done = await service.get(user, job.id)
                if done.report_path:
                    await asyncio.to_thread(shutil.copyfile, done.report_path, report)
                    final["report_url"] = str(report)
            return _print_outcome(final)
        except ServiceError as exc:
            raise _fail(exc.message) from None
        finally:
            await service.stop()
            await store.close()


@app.command()
def jobs(
    server: ServerOption = "http://127.0.0.1:8765",
    state: Annotated[str | None, typer.Option(help="e.g. running, failed, unfinished")] = None,
    notebook: Annotated[str | None, typer.Option(help="only this notebook's jobs")] = None,
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List jobs, newest first."""
    with Client(server) as client:
        try:
            found = client.jobs(state=state, notebook=notebook, limit=limit)
        except NbrelayError as exc:
            raise _fail(exc.message) from None
    if as_json:
        console.print_json(json.dumps(found))
        return
    table = Table("id", "state", "notebook", "progress", "created", "duration")
    colors = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow", "running": "cyan"}
    for job in found["jobs"]:
        progress = job["progress"]
        color = colors.get(job["state"], "white")
        table.add_row(
            str(job["id"]),
            f"[{color}]{job['state']}[/{color}]",
            job["notebook"],
            f"{progress['cell']}/{progress['total']}" if progress["total"] else "",
            (job["created_at"] or "")[:19].replace("T", " "),
            f"{job['duration_s']:.1f} s" if job.get("duration_s") is not None else "",
        )
    console.print(table)
    console.print(f"[dim]{len(found['jobs'])} of {found['total']}[/dim]")


token_app = typer.Typer(help="API tokens for auth mode 'token' (stored hashed; shown once).", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _store_settings(data_dir: Path | None) -> Any:
    from nbrelay.config import Settings

    return Settings(data_dir=data_dir) if data_dir else Settings()


async def _with_store(data_dir: Path | None, action: Any) -> Any:
    from nbrelay.store import open_store

    store = open_store(_store_settings(data_dir).database_url)
    await store.start()
    try:
        return await action(store)
    finally:
        await store.close()


DataDirOption = Annotated[Path | None, typer.Option(help="the server's data dir [env NBRELAY_DATA_DIR]")]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="the user the token logs in as")],
    admin: Annotated[bool, typer.Option(help="the user sees everyone's jobs")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Create a token for NAME and print it (only now: it is stored hashed)."""
    from nbrelay.auth import hash_token, new_token

    token = new_token()
    try:
        asyncio.run(_with_store(data_dir, lambda store: store.add_token(name, hash_token(token), admin=admin)))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    err.print(f"token for [bold]{name}[/bold]{' (admin)' if admin else ''} — keep it, it is not shown again:")
    print(token)


@token_app.command("list")
def token_list(data_dir: DataDirOption = None) -> None:
    """List tokens (names and dates, never the tokens)."""
    records = asyncio.run(_with_store(data_dir, lambda store: store.list_tokens()))
    table = Table("id", "user", "admin", "created", "last used")
    for r in records:
        used = r.last_used_at.isoformat(timespec="seconds") if r.last_used_at else ""
        table.add_row(str(r.id), r.name, "yes" if r.admin else "", r.created_at.isoformat(timespec="seconds"), used)
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="user whose tokens to revoke")], data_dir: DataDirOption = None
) -> None:
    """Revoke every token of NAME (running servers forget cached tokens within 30 s)."""
    count = asyncio.run(_with_store(data_dir, lambda store: store.delete_tokens(name)))
    console.print(f"revoked {count} token(s) of {name}")


from nbrelay.cli_files import files_app, reports_command  # noqa: E402

app.add_typer(files_app, name="files")
app.command("reports")(reports_command)


def main() -> None:  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
