"""`nbrelay files …` (the workspace on a server: list, upload, download, copy, move, delete, create folders) and
`nbrelay reports NOTEBOOK` (a notebook's report history). Errors print the server's message and exit 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated

import typer

from nbrelay.cli_options import DEFAULT_SERVER, ServerOption, TokenOption, connected
from nbrelay.cli_style import (
    command_group,
    console,
    escape,
    full_url,
    human_size,
    print_json,
    print_with_addresses,
    when,
)
from nbrelay.models import compact_json

if TYPE_CHECKING:  # the client (httpx, websockets) and rich are imported by the commands that use them
    from rich.progress import Progress, TaskID


files_app = command_group("Workspace files on a server: list, upload, download, copy, move, delete, create folders.")

PROGRESS_OVER_BYTES = 1 << 20  # a progress bar for transfers over 1 MB
_CHUNK = 1 << 16


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
    )


def _print(text: str) -> None:
    console().print(text, markup=False, highlight=False)


@files_app.command("ls")
def ls(
    path: Annotated[str, typer.Argument(help="a folder (or file) in the workspace; default: the root")] = "",
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the server's JSON (for scripts)")] = False,
) -> None:
    """List a folder: name, type, size and last change of each entry."""
    from rich.table import Table

    with connected(server, token) as client:
        model = client.list_contents(path, content=False)
        if model["type"] == "directory":
            model = client.list_contents(path)
    entries = model["content"] if model["type"] == "directory" else [model]
    if as_json:
        print_json(entries)
        return
    table = Table("name", "type", "size", "modified", title=escape(model["path"] or "/"), title_justify="left")
    for entry in entries:
        name = entry["name"] + ("/" if entry["type"] == "directory" else "")
        table.add_row(escape(name), entry["type"], human_size(entry.get("size")), when(entry.get("last_modified")))
    out = console()
    out.print(table)
    out.print(f"[dim]{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}[/dim]")


@files_app.command("put")
def put(
    local: Annotated[Path, typer.Argument(help="the file to upload", exists=True, dir_okay=False, readable=True)],
    remote: Annotated[
        str | None, typer.Argument(help="where in the workspace (ending in '/': into that folder); default: its name")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing file")] = False,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Upload a file (raw bytes; a progress bar for files over 1 MB)."""
    target = remote or local.name
    if target.endswith("/"):
        target += local.name
    size = local.stat().st_size
    with connected(server, token) as client:
        if size <= PROGRESS_OVER_BYTES:
            model = client.upload(target, local.read_bytes(), overwrite=overwrite, size=size)
        else:
            with _progress() as bar:
                task = bar.add_task(f"put {escape(local.name)}", total=size)

                def chunks() -> Iterator[bytes]:
                    with local.open("rb") as source:
                        while chunk := source.read(_CHUNK):
                            bar.advance(task, len(chunk))
                            yield chunk

                model = client.upload(target, chunks(), overwrite=overwrite, size=size)
    _print(f"uploaded {local} → {model['path']} ({human_size(model['size'])})")


@files_app.command("get")
def get(
    remote: Annotated[str, typer.Argument(help="the workspace file to download")],
    local: Annotated[
        Path | None, typer.Argument(help="where to write it (a folder: into it); default: its name, here")
    ] = None,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Download a file (written to a temporary name first, renamed when complete)."""
    name = PurePosixPath(remote).name
    target = local if local is not None else Path(name)
    if target.is_dir():
        target = target / name
    with connected(server, token) as client, ExitStack() as stack:
        bars: list[tuple[Progress, TaskID]] = []

        def progress(done: int, total: int | None) -> None:
            if total is None or total <= PROGRESS_OVER_BYTES:
                return
            if not bars:  # shown only for big files, from the first chunk on
                bar = stack.enter_context(_progress())
                bars.append((bar, bar.add_task(f"get {escape(name)}", total=total)))
            bar, task = bars[0]
            bar.update(task, completed=done)

        written = client.download(remote, target, on_progress=progress)
    _print(f"downloaded {remote} → {written} ({human_size(written.stat().st_size)})")


@files_app.command("cp")
def cp(
    source: Annotated[str, typer.Argument(help="the file to copy")],
    folder: Annotated[str, typer.Argument(help="the folder to copy it into ('' or '/' for the root)")],
    name: Annotated[str | None, typer.Option("--name", help="the copy's name; default: like x-Copy1.ipynb")] = None,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Copy a file into a folder."""
    with connected(server, token) as client:
        model = client.copy(source, folder.strip("/"), name)
    _print(f"copied {source} → {model['path']}")


@files_app.command("mv")
def mv(
    source: Annotated[str, typer.Argument(help="the file or folder to move")],
    target: Annotated[str, typer.Argument(help="its new path")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing file")] = False,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Rename or move a file or folder."""
    with connected(server, token) as client:
        model = client.move(source, target, overwrite=overwrite)
    _print(f"moved {source} → {model['path']}")


@files_app.command("rm")
def rm(
    path: Annotated[str, typer.Argument(help="the file, link or folder to delete")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="a folder with everything in it")] = False,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Delete a file, a link, or a folder."""
    with connected(server, token) as client:
        client.delete(path, recursive=recursive)
    _print(f"deleted {path}")


@files_app.command("mkdir")
def mkdir(
    path: Annotated[str, typer.Argument(help="the folder to create (its parent must exist)")],
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Create a folder."""
    with connected(server, token) as client:
        model = client.mkdir(path)
    _print(f"created {model['path']}/")


def reports_command(
    notebook: Annotated[str, typer.Argument(help="the notebook's path in the workspace")],
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the server's JSON (for scripts)")] = False,
) -> None:
    """List a notebook's report history: the reports of its finished jobs, newest first."""
    from rich.table import Table

    with connected(server, token) as client:
        found = client.reports(notebook, limit=limit)
    if as_json:
        print_json(found)
        return
    table = Table("job", "state", "parameters", "size", "finished", "report", title=escape(notebook))
    for column in table.columns:
        column.overflow = "fold"  # wrapped, never cut
    addresses = []
    colors = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow"}
    for report in found.get("reports", []):
        state = str(report.get("state", ""))
        color = colors.get(state, "white")
        url = report.get("report_url") or ""
        table.add_row(
            str(report.get("job", "")),
            f"[{color}]{escape(state)}[/{color}]",
            escape(compact_json(report.get("parameters") or {})),
            human_size(report.get("size_bytes")),
            when(report.get("finished_at")),
            escape(full_url(server, url)),
        )
        addresses.append((f"report of job {report.get('job', '')}", full_url(server, url)))
    out = console()
    print_with_addresses(out, table, addresses)
    out.print(f"[dim]{len(found.get('reports', []))} of {found.get('total', 0)}[/dim]")
