"""The HTML report loads nothing from elsewhere: math as MathML written at export time, no script from a CDN,
images with alternative text (so nbconvert has nothing to warn about)."""

from __future__ import annotations

import logging
import re

import nbformat
import pytest

from nbrelay.runner.html import ReportWriter
from nbrelay.runner.mathml import to_mathml, typeset

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def math_notebook() -> nbformat.NotebookNode:
    """A markdown cell with inline, display and environment math; a code cell's Math, Latex and image outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    code = nbformat.v4.new_code_cell("display(Math(...)); display(Latex(...)); plt.plot()")
    code.outputs = [
        nbformat.v4.new_output("display_data", {"text/latex": r"$\displaystyle \frac{n(n+1)}{2}$", "text/plain": "m"}),
        nbformat.v4.new_output("display_data", {"text/latex": r"Area: $\pi r^2$ & more", "text/plain": "a"}),
        nbformat.v4.new_output("display_data", {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}),
    ]
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "Euler: $e^{i\\pi}+1=0$\n\n$$\\int_0^1 x^2\\,dx$$\n\n\\begin{equation}a^2+b^2=c^2\\end{equation}"
        ),
        code,
    ]
    return nb


@pytest.fixture(scope="module")
def report() -> str:
    return ReportWriter().to_html(math_notebook())


def test_the_report_loads_nothing_from_another_host(report: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", report)
    assert "import(" not in report  # Mermaid's loader
    assert "mathjax" not in report.lower()
    assert "require.js" not in report and "require.min.js" not in report


def test_markdown_math_is_mathml(report: str) -> None:
    assert "$e^{i" not in report and "$$" not in report
    assert report.count('<math display="inline">') >= 2  # Euler in markdown, Area in a Latex output
    assert report.count('<math display="block">') == 2  # the $$ formula and the equation
    assert "<mi>π</mi>" in report


def test_latex_outputs_are_typeset_with_their_text_escaped(report: str) -> None:
    assert "<mfrac>" in report
    assert "Area: <math" in report and "&amp; more" in report


def test_images_get_their_text_form_as_alternative_text(report: str, caplog: pytest.LogCaptureFixture) -> None:
    assert 'alt="&lt;Figure size 640x480 with 1 Axes&gt;"' in report
    with caplog.at_level(logging.WARNING):
        ReportWriter().to_html(math_notebook())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.parametrize(
    ("tex", "display", "expected"),
    [
        ("x^2", False, '<math display="inline"><mrow><msup><mi>x</mi><mn>2</mn></msup></mrow></math>'),
        ("a < b", True, "<mo>&lt;</mo>"),
        (r"\begin{aligned} a &= b \\ c &= d \end{aligned}", True, "<mtable"),
    ],
)
def test_to_mathml(tex: str, display: bool, expected: str) -> None:
    assert expected in to_mathml(tex, display=display)


def test_tex_that_cannot_be_converted_stays_as_escaped_tex() -> None:
    assert to_mathml(r"\frac{1}{", display=False) == r'<code class="nbrelay-tex">$\frac{1}{$</code>'


def test_markup_smuggled_in_a_formula_refuses_it() -> None:
    html = to_mathml(r"\text{<script>alert(1)</script>}", display=False)
    assert "<script>" not in html
    assert html.startswith('<code class="nbrelay-tex">')


def test_typeset_finds_every_delimiter() -> None:
    html = typeset(r"a $x$ b \(y\) c $$z$$ d \[w\] e \begin{align*}p&=q\end{align*} <f>")
    assert html.count("<math") == 5
    assert html.endswith(" &lt;f&gt;")
