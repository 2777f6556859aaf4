"""-p KEY=VALUE as the notebook declares each name, and a server's refusal as a CLI error."""

from __future__ import annotations

import pytest
import typer

from nbrelay.cli_options import connected, parse_parameters
from nbrelay.errors import NotFound


def test_values_take_the_declared_type_and_untyped_ones_read_as_json_when_they_parse() -> None:
    declared = {"name": "str", "count": "int", "flag": "bool", "maybe": "Optional[bool]", "rate": None}
    got = parse_parameters(
        ["name=42", "count=3", "flag=yes", "maybe=off", "rate=0.5", "free=[1, 2]", "text=hello", "eq=a=b"], declared
    )
    assert got == {
        "name": "42",  # a str stays the text given, digits too
        "count": 3,
        "flag": True,
        "maybe": False,
        "rate": 0.5,
        "free": [1, 2],
        "text": "hello",  # no JSON: the text
        "eq": "a=b",  # the first '=' splits
    }


@pytest.mark.parametrize("pair", ["novalue", "=3"])
def test_a_pair_without_a_name_or_an_equals_sign_is_a_usage_error(pair: str) -> None:
    with pytest.raises(typer.BadParameter, match="expected key=value"):
        parse_parameters([pair], {})


def test_a_bool_that_is_no_truth_value_and_text_that_is_not_utf8_are_usage_errors() -> None:
    with pytest.raises(typer.BadParameter, match="is not true/false"):
        parse_parameters(["flag=maybe"], {"flag": "bool"})
    with pytest.raises(typer.BadParameter, match="not UTF-8"):
        parse_parameters(["name=\udcff"], {})  # how Python keeps a byte that is not UTF-8 in argv


def test_a_server_refusal_inside_connected_is_its_message_and_exit_code_2() -> None:
    with pytest.raises(typer.Exit) as ended, connected("http://127.0.0.1:9", None):
        raise NotFound("no notebook 'x.ipynb'")
    assert ended.value.exit_code == 2


@pytest.mark.parametrize("declared", ["Optional[bool]", "bool | None"])
def test_a_bool_that_takes_none_reads_truth_values_and_null(declared: str) -> None:
    assert parse_parameters(["a=off", "b=YES", "c=null"], dict.fromkeys("abc", declared)) == {
        "a": False,
        "b": True,
        "c": None,
    }
