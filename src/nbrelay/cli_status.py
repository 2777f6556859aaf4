"""`nbrelay status`: whether a server can take work now — its version, and what its readiness checks say (the job
database, the hub, the executor) — and, with --wait, waiting until it can (for scripts that start one)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from nbrelay.cli_options import DEFAULT_SERVER, ServerOption, TokenOption
from nbrelay.cli_style import console, escape, fail, print_json
from nbrelay.errors import RemoteError

NOT_READY = 1  # the exit code of a server that answers but cannot take work; 2 is for one that cannot be reached
POLL_S = 0.5


def _ask(server: str, token: str | None, wait_s: float) -> dict[str, Any]:
    """The readiness answer; with `wait_s`, the first that says ready, or the last one when time runs out (an
    unreachable server is asked again meanwhile too: it may be starting)."""
    from nbrelay.client import Client

    deadline = time.monotonic() + wait_s
    with Client(server, token=token, timeout_s=10) as client:
        while True:
            try:
                answer = client.ready()
            except RemoteError as exc:
                if time.monotonic() >= deadline:
                    hint = exc.hint
                    if exc.status == 404:
                        hint = "is it an nbrelay server, and of a version with /api/ready (2026-12-05 or later)?"
                    raise fail(exc.message, hint) from None
            else:
                if answer.get("status") == "ready" or time.monotonic() >= deadline:
                    return answer
            time.sleep(POLL_S)


def status_command(
    server: ServerOption = DEFAULT_SERVER,
    wait: Annotated[
        float, typer.Option(help="wait up to this many seconds for the server to be ready (it may be starting)")
    ] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print the server's JSON (for scripts)")] = False,
    token: TokenOption = None,
) -> None:
    """Whether the server can take work now: its database, hub and executor answer. Exit code 0 when it can, 1 when
    it answers but cannot, 2 when it cannot be reached."""
    answer = _ask(server, token, max(0.0, wait))
    ready = answer.get("status") == "ready"
    if as_json:
        print_json(answer)
    else:
        out = console()
        word = "[green]ready[/green]" if ready else "[red]not ready[/red]"
        out.print(f"{escape(server)}: nbrelay {escape(str(answer.get('version', '?')))}, {word}")
        if answer.get("reason"):
            out.print(f"  {escape(str(answer['reason']))}")
        for name, check in answer.get("checks", {}).items():
            mark = "[green]ok[/green]" if check.get("ok") else "[red]failing[/red]"
            line = f"  {name:<9} {mark}  {check.get('ms', 0):g} ms"
            if check.get("reason"):
                line += f"  {escape(str(check['reason']))}"
            out.print(line, highlight=False)
        if not ready and not any(check.get("reason") for check in answer.get("checks", {}).values()):
            out.print("  [dim]why is said to admins (--token), or to everyone where metrics are public[/dim]")
    if not ready:
        raise typer.Exit(NOT_READY)
