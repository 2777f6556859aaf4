"""Post-run steps checked before a job is queued (nbrelay.steps.validate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nbrelay.errors import Unprocessable
from nbrelay.steps import MAX_STEPS, notebook_steps, read_notebook_steps, validate_steps


def test_valid_steps_are_normalised_with_defaults() -> None:
    raw = [
        {"action": "copy", "source": "report", "to": "publish/{notebook}-{date}.html"},
        {"action": "move", "source": "scratch/*.csv", "to": "archive/", "when": "always", "overwrite": True},
        {"action": "delete", "source": "out/**/*.tmp"},
    ]
    assert validate_steps(raw) == [
        {
            "action": "copy",
            "source": "report",
            "to": "publish/{notebook}-{date}.html",
            "when": "success",
            "overwrite": False,
        },
        {"action": "move", "source": "scratch/*.csv", "to": "archive/", "when": "always", "overwrite": True},
        {"action": "delete", "source": "out/**/*.tmp", "when": "success"},
    ]
    assert validate_steps(None) == []
    assert validate_steps([]) == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"action": "copy"}, "steps must be a list of steps, not dict"),
        ([{"action": "delete", "source": "x"}] * (MAX_STEPS + 1), f"at most {MAX_STEPS} are allowed"),
        (["copy"], "steps[0] must be an object"),
        ([{"source": "report", "to": "a.html"}], "steps[0]: action is required"),
        ([{"action": "publish", "source": "report", "to": "a"}], "steps[0]: unknown action 'publish'"),
        ([{"action": "copy", "source": "report", "to": "a", "dest": "b"}], "steps[0]: unknown key 'dest'"),
        ([{"action": "copy", "to": "a"}], "steps[0]: source is required"),
        ([{"action": "copy", "source": 3, "to": "a"}], "steps[0]: source is required"),
        ([{"action": "delete", "source": "../*.csv"}], "steps[0]: source: '..' is not allowed"),
        ([{"action": "delete", "source": "/etc/*"}], "steps[0]: source: absolute paths are not accepted"),
        ([{"action": "delete", "source": "a\\*.csv"}], "steps[0]: source: backslashes are not allowed"),
        ([{"action": "delete", "source": "a\x00.csv"}], "steps[0]: source: control characters"),
        ([{"action": "delete", "source": "%2e%2e/x"}], "percent-encoded paths are not accepted"),
        ([{"action": "copy", "source": "report", "to": "a", "when": "later"}], "unknown when 'later'"),
        ([{"action": "copy", "source": "report"}], "steps[0]: copy needs 'to'"),
        ([{"action": "move", "source": "a.csv"}], "steps[0]: move needs 'to'"),
        ([{"action": "copy", "source": "report", "to": ""}], "'to' must be a non-empty path template"),
        ([{"action": "delete", "source": "a.csv", "to": "b"}], "steps[0]: delete takes no 'to'"),
        ([{"action": "delete", "source": "a.csv", "overwrite": True}], "overwrite applies to copy and move only"),
        ([{"action": "copy", "source": "report", "to": "a", "overwrite": "yes"}], "overwrite must be true or false"),
        ([{"action": "move", "source": "report", "to": "a"}], "the job's report cannot be moved"),
        ([{"action": "delete", "source": "notebook"}], "the job's notebook cannot be deleted"),
        ([{"action": "copy", "source": "report", "to": "p/{nope}.html"}], "unknown field {nope}"),
        ([{"action": "copy", "source": "report", "to": "{notebook.__class__}"}], "unknown field {notebook.__class__}"),
        ([{"action": "copy", "source": "report", "to": "{job:05d}.html"}], "may not have a conversion or format spec"),
        ([{"action": "copy", "source": "report", "to": "{job!r}.html"}], "may not have a conversion or format spec"),
        ([{"action": "copy", "source": "report", "to": "{}.html"}], "has an empty field"),
        ([{"action": "copy", "source": "report", "to": "a{b.html"}], "is not a valid template"),
        ([{"action": "copy", "source": "report", "to": "/srv/{job}.html"}], "absolute paths are not accepted"),
        ([{"action": "copy", "source": "report", "to": "{notebook_dir}/../x"}], "'..' is not allowed"),
    ],
)
def test_invalid_steps_are_refused_with_a_clear_message(raw: Any, message: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        validate_steps(raw)
    assert caught.value.code == "invalid_steps"
    assert caught.value.status == 422
    assert message in caught.value.message


def test_steps_beyond_the_first_are_named_by_index() -> None:
    raw = [{"action": "delete", "source": "a"}, {"action": "delete", "source": "b", "when": "never"}]
    with pytest.raises(Unprocessable, match=r"steps\[1\]: unknown when 'never'"):
        validate_steps(raw)


def test_parameter_fields_only_for_parameters_the_job_has() -> None:
    step = {"action": "copy", "source": "report", "to": "out/{region}/{notebook}.html"}
    assert validate_steps([step], parameters=["region"])[0]["to"] == "out/{region}/{notebook}.html"
    with pytest.raises(Unprocessable, match=r"unknown field \{region\}.*parameters of this job: none"):
        validate_steps([step])


def test_the_origin_names_where_the_steps_came_from() -> None:
    with pytest.raises(Unprocessable, match=r"^nb\.ipynb metadata\.nbrelay\.steps\[0\]: unknown action"):
        validate_steps([{"action": "zap", "source": "x"}], origin="nb.ipynb metadata.nbrelay.steps")


def test_notebook_steps_from_metadata(tmp_path: Path) -> None:
    defaults = [{"action": "copy", "source": "report", "to": "p/{notebook}.html"}]
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"metadata": {"nbrelay": {"steps": defaults}}, "cells": []}))
    assert read_notebook_steps(path) == defaults
    assert notebook_steps({"metadata": {}}) is None
    assert notebook_steps({"metadata": {"nbrelay": "nonsense"}}) is None
    assert read_notebook_steps(tmp_path / "missing.ipynb") is None
