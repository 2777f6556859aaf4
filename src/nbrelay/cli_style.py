"""How every `nbrelay` command looks: its help (plain text, `-h` as `--help`, defaults shown, booleans as flags)
and the forms it prints (JSON for scripts, sizes people read, times, a server's full addresses).

rich is imported when a command prints, never when the CLI is imported: `nbrelay --help` and `--version` do not
pay for it."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# Click's plain help shows a flag as `--local` or `--examples / --no-examples`; Typer's rich panels give every
# option a type column, so flags read `--local <bool>` as if they took a value.
CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "show_default": True,
    "max_content_width": 120,  # click's own limit is 80 columns, whatever the terminal
}


def seconds(value: str) -> float:
    """A timeout option's value: a number of seconds above 0 (nan, inf, 0 are a usage error, not a traceback)."""
    try:
        number = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number <= 0:
        raise typer.BadParameter(f"{value!r} is not a number of seconds above 0")
    return number


def command_group(help: str) -> typer.Typer:
    """A group of commands (`nbrelay`, `nbrelay files`, …) in the house style; without a command, its help."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        rich_markup_mode=None,
        context_settings=CONTEXT_SETTINGS,
        pretty_exceptions_enable=False,
    )


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr), made when a command prints: it takes the terminal's width (or $COLUMNS)
    as it is then, not as it was when the CLI was imported."""
    from rich.console import Console

    return Console(stderr=stderr)


def escape(text: str) -> str:
    """`text` as it prints, not read as rich markup (`[red]` in a file name stays as it is)."""
    from rich.markup import escape

    return escape(text)


def fail(message: str, hint: str | None = None, code: int = 2) -> typer.Exit:
    """Print `error: <message>` (and the hint, when the server gave one) on stderr, exactly as written: never read
    as markup, where `[x]` would vanish and `\\[` lose a backslash; the exit to raise."""
    from rich.text import Text

    err = console(stderr=True)
    err.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False)
    if hint:
        err.print(Text(f"hint: {hint}", style="dim"), highlight=False)
    return typer.Exit(code)


def print_json(data: Any) -> None:
    """For scripts: the server's JSON as it is, never wrapped or coloured (whatever the terminal)."""
    print(json.dumps(data, indent=1, ensure_ascii=False))


def human_size(size_bytes: int | None) -> str:
    """`1.5 MB`, `230 bytes`; empty when unknown."""
    from rich.filesize import decimal

    return "" if size_bytes is None else decimal(size_bytes)


def duration(seconds_taken: float | None) -> str:
    """A run's duration as people read it: "40 ms", "2.5 s", "3 min 07 s"; "" when there is none."""
    if seconds_taken is None:
        return ""
    if seconds_taken < 1:
        return f"{seconds_taken * 1000:.0f} ms"
    if seconds_taken < 60:
        return f"{seconds_taken:.1f} s"
    minutes, rest = divmod(round(seconds_taken), 60)
    return f"{minutes} min {rest:02d} s"


def when(stamp: str | None) -> str:
    """An ISO time as `2026-01-02 13:45:00` (UTC, as the server gives it)."""
    return (stamp or "")[:19].replace("T", " ")


def full_url(server: str, address: str | None) -> str:
    """A server's path (`/api/jobs/3/report`) as an address to open; an address that is already one as it is."""
    if not address:
        return ""
    return f"{server.rstrip('/')}{address}" if address.startswith("/") else address


def print_with_addresses(out: Console, table: Table, addresses: list[tuple[str, str]]) -> None:
    """Print `table`, whose last column holds addresses (`addresses`: each row's label, such as "report of job
    3", and address). A table wider than the terminal goes without that column, and the addresses follow it
    whole, one a line after their label: folded into a narrow column, an address could be neither clicked nor
    copied."""
    from rich.measure import Measurement

    if Measurement.get(out, out.options.update_width(1 << 20), table).maximum <= out.width:
        out.print(table)
        return
    table.columns.pop()
    out.print(table)
    for label, address in addresses:
        if address:
            out.print(f"{escape(label)}: {escape(address)}", soft_wrap=True, highlight=False)
