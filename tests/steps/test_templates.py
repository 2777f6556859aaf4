"""Destination templates of post-run steps (nbrelay.steps.templates)."""

from __future__ import annotations

from nbrelay.steps import fill_fields, render, safe_value, template_values
from tests.steps.support import make_job


def test_template_values() -> None:
    job = make_job(parameters={"region": "eu/west\\1\x00x", "n": 3, "flag": True})
    values = template_values(job)
    assert values["notebook"] == "weekly"
    assert values["notebook_dir"] == "analysis"
    assert values["date"] == "2026-03-04"
    assert values["time"] == "050607"
    assert values["job"] == "42"
    assert values["state"] == "succeeded"
    assert values["user"] == "alice"
    assert values["region"] == "eu_west_1_x"  # never a folder, never a NUL
    assert values["n"] == "3"
    assert values["flag"] == "True"
    assert template_values(make_job(notebook="top.ipynb"))["notebook_dir"] == "."


def test_builtin_fields_win_over_parameters_of_the_same_name() -> None:
    values = template_values(make_job(parameters={"job": "mine", "date": "x/y"}))
    assert values["job"] == "42"
    assert values["date"] == "2026-03-04"


def test_render_keeps_escaped_braces_and_does_no_lookups() -> None:
    assert render("a{{b}}/{x}.html", {"x": "1"}) == "a{b}/1.html"
    assert safe_value("a/b\\c\nd") == "a_b_c_d"


def test_fill_fields_writes_in_the_values_given_and_keeps_the_rest() -> None:
    steps = [
        {"action": "copy", "source": "report", "to": "out/{region}/{notebook}-{{x}}-{job}.html"},
        {"action": "delete", "source": "scratch/*.csv"},
    ]
    filled = fill_fields(steps, {"region": "e/m{a}", "job": "not this"})
    assert filled[0]["to"] == "out/e_m{{a}}/{notebook}-{{x}}-{job}.html"  # safe, braces kept literal; built-ins stay
    assert filled[1] == steps[1]
    assert render(filled[0]["to"], {"notebook": "nb", "job": "7"}) == "out/e_m{a}/nb-{x}-7.html"
