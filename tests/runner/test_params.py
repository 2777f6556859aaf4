from pathlib import Path

import nbformat
import pytest

from nbrelay.errors import Unprocessable
from nbrelay.runner.params import check_parameters, declared_parameters, default_value, inject_parameters

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_declared_parameters_with_types_defaults_and_help() -> None:
    declared = {p.name: p for p in declared_parameters(load("params.ipynb")) or []}
    assert {name: p.type for name, p in declared.items()} == {
        "n": "int",
        "x": "float",
        "label": "str",
        "flag": "bool",
        "items": "list",
        "opts": "dict",
    }
    assert declared["items"].help == "a list"
    assert [default_value(declared[n]) for n in ("n", "x", "label", "flag", "items", "opts")] == [
        1,
        0.5,
        "a",
        False,
        [],
        {},
    ]


def test_no_parameters_cell_declares_nothing() -> None:
    assert declared_parameters(load("no_params.ipynb")) == []


@pytest.mark.parametrize(
    "given",
    [
        {"n": 2, "x": 1.5, "label": "b", "flag": True, "items": [1], "opts": {"a": 1}},
        {"x": 3},  # an int is a fine float
        {},
    ],
)
def test_good_parameters_pass(given: dict) -> None:
    check_parameters(declared_parameters(load("params.ipynb")), given)


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"nn": 1}, "'nn': unknown parameter"),
        ({"n": "3"}, "expected an integer"),
        ({"n": True}, "expected an integer"),
        ({"n": 1.5}, "expected an integer"),
        ({"x": "a"}, "expected a number"),
        ({"flag": 1}, "expected true or false"),
        ({"items": {}}, "expected a list"),
        ({"opts": []}, "expected an object"),
        ({"label": 5}, "expected a string"),
    ],
)
def test_bad_parameters_are_refused_naming_the_known_ones(given: dict, fragment: str) -> None:
    with pytest.raises(Unprocessable) as caught:
        check_parameters(declared_parameters(load("params.ipynb")), given)
    assert caught.value.status == 422
    assert fragment in caught.value.message
    assert "flag, items, label, n, opts, x" in caught.value.message


def test_any_parameter_is_unknown_without_a_parameters_cell() -> None:
    with pytest.raises(Unprocessable, match="no cell tagged 'parameters'"):
        check_parameters(declared_parameters(load("no_params.ipynb")), {"a": 1})


def test_inject_adds_the_papermill_cell_after_parameters() -> None:
    nb = inject_parameters(load("params.ipynb"), {"n": 5, "label": "x"})
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    index = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
    assert "parameters" in tags[index - 1]
    assert "n = 5" in nb.cells[index].source and 'label = "x"' in nb.cells[index].source


def untyped(source: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_an_untyped_parameter_takes_the_type_of_its_literal_default() -> None:
    source = 'n = 3\nx = 1.5\nflag = True\nname = "a"\nitems = [1]\nopts = {"a": 1}\nneg = -2\npair = (1, 2)'
    declared = {p.name: p.type for p in declared_parameters(untyped(source)) or []}
    assert declared == {
        "n": "int",
        "x": "float",
        "flag": "bool",
        "name": "str",
        "items": "list",
        "opts": "dict",
        "neg": "int",
        "pair": "tuple",
    }


@pytest.mark.parametrize(
    ("given", "fragment"),
    [
        ({"n": "abc"}, "parameter 'n': expected an integer (int), got 'abc'"),
        ({"n": 1.5}, "parameter 'n': expected an integer"),
        ({"x": "1.5"}, "parameter 'x': expected a number (float)"),
        ({"flag": "yes"}, "parameter 'flag': expected true or false"),
        ({"name": 1}, "parameter 'name': expected a string"),
        ({"items": {"a": 1}}, "parameter 'items': expected a list"),
        ({"opts": [1]}, "parameter 'opts': expected an object"),
    ],
)
def test_a_value_unlike_the_literal_default_is_refused_naming_the_parameter(given: dict, fragment: str) -> None:
    declared = declared_parameters(untyped('n = 3\nx = 1.5\nflag = True\nname = "a"\nitems = [1]\nopts = {"a": 1}'))
    with pytest.raises(Unprocessable) as caught:
        check_parameters(declared, given)
    assert caught.value.status == 422 and fragment in caught.value.message


def test_without_a_literal_default_any_json_value_goes() -> None:
    declared = declared_parameters(untyped("anything = None\ncomputed = 2 * 3\ncalled = len('ab')"))
    assert {p.name: p.type for p in declared or []} == {"anything": "None", "computed": "None", "called": "None"}
    check_parameters(declared, {"anything": [1], "computed": "text", "called": {"a": None}})
    check_parameters(declared_parameters(untyped("x = 1.5")), {"x": 2})  # an int is a fine float


def _declaring(source: str) -> list:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})],
        metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}},
    )
    return declared_parameters(nb) or []


@pytest.mark.parametrize(
    "declaration",
    ["n: int | None = None", "n: Optional[int] = None", "n: typing.Optional[int] = None", "n: Union[int, None] = 1"],
)
def test_a_type_that_takes_none_too_checks_its_values_and_lets_null_through(declaration: str) -> None:
    declared = _declaring(declaration)
    check_parameters(declared, {"n": 3})
    check_parameters(declared, {"n": None})
    with pytest.raises(Unprocessable, match="expected an integer or null"):
        check_parameters(declared, {"n": "abc"})


def test_a_python_cell_is_read_by_python_so_no_parameter_is_dropped() -> None:
    """papermill's line reader dropped a line with a second '=' and a modern annotation, and ran a magic into the
    previous default: those parameters then did not exist for the service, which refuses unknown names."""
    declared = _declaring(
        'url = "https://example.org/?a=b"\n'
        "opts = dict(a=1)\n"
        "n: int | None = None  # how many\n"
        "items = [\n    1, 2,  # two\n]  # the items\n"
        'label: str = "x  y"\n'
        "%matplotlib inline\n"
        "k = 3  # type: float the k\n"
        'm: "list[int]" = []\n'
        "x, y = 1, 2\n"
        "if True:\n    hidden = 1\n"
    )
    got = {p.name: (p.type, p.help) for p in declared}
    assert got == {
        "url": ("str", ""),
        "opts": ("None", ""),  # no literal: any value
        "n": ("int | None", "how many"),
        "items": ("list", "the items"),
        "label": ("str", ""),
        "k": ("float", "the k"),
        "m": ("list[int]", ""),
    }
    assert [default_value(p) for p in declared if p.name in ("url", "items", "label")] == [
        "https://example.org/?a=b",
        [1, 2],
        "x  y",
    ]
    check_parameters(declared, {"url": "https://other/?x=1", "opts": {"b": 2}, "n": 4, "k": 1.5})


def test_a_cell_that_is_no_python_falls_back_to_papermills_reader() -> None:
    declared = _declaring("n = 3\nm = 4 +\n")
    assert [(p.name, p.type) for p in declared] == [("n", "int"), ("m", "None")]
