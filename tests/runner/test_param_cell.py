"""A Python parameters cell read with Python's parser."""

from __future__ import annotations

from nbrelay.runner.param_cell import read_python_cell


def test_a_name_assigned_again_keeps_its_first_place_and_takes_the_later_definition() -> None:
    assert read_python_cell("a = 1\nb = 2  # bee\na: float = 3.5  # ay\n") == [
        ("a", "float", "3.5", "ay"),
        ("b", "None", "2", "bee"),
    ]


def test_magics_and_shell_lines_are_left_out_and_the_rest_is_read() -> None:
    assert read_python_cell("%load_ext autoreload\n!pip list\nn = 1\n") == [("n", "None", "1", "")]


def test_a_bare_annotation_and_what_is_no_assignment_to_a_name_declare_nothing() -> None:
    assert read_python_cell("n: int\nimport os\nos.x = 1\nd['k'] = 2\nfor i in []: pass\n") == []


def test_a_cell_that_is_no_python_is_none() -> None:
    assert read_python_cell("n = 3\nthis is no python\n") is None
    assert read_python_cell("s = '''unterminated\n") is None
