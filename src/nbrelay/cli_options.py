"""What every command that talks to a server takes: --server, --token and -p KEY=VALUE, and the client they make."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nbrelay.cli_style import fail
from nbrelay.errors import NbrelayError
from nbrelay.models import type_kind
from nbrelay.text import lone_surrogate

if TYPE_CHECKING:  # the client (httpx, websockets) is imported by the commands that use it
    from nbrelay.client import Client

DEFAULT_SERVER = "http://127.0.0.1:8765"
ServerOption = Annotated[str, typer.Option("--server", envvar="NBRELAY_SERVER", help="URL of the nbrelay server")]
TokenOption = Annotated[
    str | None, typer.Option("--token", envvar="NBRELAY_TOKEN", help="API token (auth mode token)", show_default=False)
]


@contextmanager
def connected(server: str, token: str | None) -> Iterator[Client]:
    """A client; a server error becomes its message (and hint) on stderr and exit code 2."""
    from nbrelay.client import Client

    with Client(server, token=token) as client:
        try:
            yield client
        except NbrelayError as exc:
            raise fail(exc.message, exc.hint) from None


def _coerce(value: str, type_name: str | None) -> Any:
    """A -p value as the notebook's declared type: text for a str, a truth value for a bool, else JSON when it
    parses (numbers, lists, null), else the text — the server says what it expected of a value it refuses."""
    kind, nullable = type_kind(type_name or "None")
    if kind == "str" and not (nullable and value == "null"):
        return value
    if kind == "bool":
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        if nullable and lowered in ("null", "none"):
            return None
        raise typer.BadParameter(f"{value!r} is not true/false" + (" or null" if nullable else ""))
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def parse_parameters(pairs: list[str], declared: Mapping[str, str | None]) -> dict[str, Any]:
    """-p KEY=VALUE pairs as parameters, each value typed as the notebook declares its name."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        if (found := lone_surrogate(pair)) is not None:  # bytes that are not UTF-8 (Python keeps them as surrogates)
            raise typer.BadParameter(f"{name!r}: not UTF-8 text ({found})", param_hint="-p")
        parameters[name] = _coerce(value, declared.get(name))
    return parameters
