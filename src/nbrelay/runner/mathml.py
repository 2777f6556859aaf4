"""TeX math to MathML when the report is written, so browsers typeset it themselves: no MathJax, nothing to load.

`to_mathml` converts one formula (latex2mathml), and keeps only MathML elements and presentational attributes of
what comes out; a formula it cannot convert stays as its TeX source, escaped. `typeset` does it for the formulas in
a text/latex output (`$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]`, `\\begin{…}…\\end{…}`).
"""

from __future__ import annotations

import html
import logging
import re
import xml.etree.ElementTree as ET

from latex2mathml.converter import convert

log = logging.getLogger(__name__)

MATHML_NS = "{http://www.w3.org/1998/Math/MathML}"
# MathML Core's elements (what browsers typeset), plus the few latex2mathml also writes.
_ELEMENT_NAMES = (
    "math annotation merror mfrac mi mmultiscripts mn mo mover mpadded mphantom mprescripts mroot mrow ms mspace "
    "msqrt mstyle msub msubsup msup mtable mtd mtext mtr munder munderover none semantics menclose mfenced"
)
_ATTRIBUTE_NAMES = (
    "display displaystyle scriptlevel mathvariant mathsize mathcolor mathbackground fence form stretchy symmetric "
    "largeop movablelimits accent accentunder lspace rspace minsize maxsize separator width height depth "
    "linethickness columnalign rowalign columnspacing rowspacing columnlines rowlines frame framespacing "
    "columnspan rowspan notation open close separators linebreak voffset"
)
ELEMENTS = frozenset(_ELEMENT_NAMES.split())
ATTRIBUTES = frozenset(_ATTRIBUTE_NAMES.split())  # presentation only: no href, no event handlers
# latex2mathml lays out align* but not its in-formula twin aligned (the alignment marks would come out as text).
_ALIGNED = re.compile(r"\\(begin|end)\{aligned\}")
_MATH_IN_TEXT = re.compile(
    r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<bracket>.+?)\\\]|\\begin\{(?P<env>[A-Za-z]+\*?)\}(?P<body>.*?)\\end\{(?P=env)\}"
    r"|\\\((?P<paren>.+?)\\\)|(?<![\\$])\$(?P<d>[^$]+?)(?<!\\)\$",
    re.DOTALL,
)


def _clean(element: ET.Element) -> None:
    """Keep MathML and its presentation only; anything else (a `<script>` from `\\text{…}`) refuses the formula."""
    for node in element.iter():
        name = node.tag.removeprefix(MATHML_NS)
        if name not in ELEMENTS:
            raise ValueError(f"<{name}> is not MathML")
        node.tag = name  # in HTML, <math> puts its content in the MathML namespace by itself
        for attribute in list(node.attrib):
            if attribute not in ATTRIBUTES:
                del node.attrib[attribute]


def to_mathml(tex: str, *, display: bool) -> str:
    """One formula as a `<math>` element, or its TeX escaped in a `<code>` when it cannot be converted."""
    source = _ALIGNED.sub(lambda m: f"\\{m.group(1)}{{align*}}", tex.strip())
    try:
        element = ET.fromstring(convert(source, display="block" if display else "inline"))
        _clean(element)
    except Exception as exc:  # latex2mathml raises its own tree and plain errors alike on TeX it does not read
        log.debug("formula left as TeX (%s): %s", exc, tex)
        fence = "$$" if display else "$"
        return f'<code class="nbrelay-tex">{html.escape(fence + tex + fence)}</code>'
    return ET.tostring(element, encoding="unicode", short_empty_elements=False)


def environment(name: str, body: str) -> str:
    """`\\begin{name}body\\end{name}` standing alone, as a displayed formula."""
    if name.rstrip("*") == "equation":  # numbering aside, an equation is its body
        return to_mathml(body, display=True)
    return to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)


def typeset(text: str) -> str:
    """A text/latex output as HTML: its formulas as MathML, the text between them escaped."""
    parts: list[str] = []
    end = 0
    for match in _MATH_IN_TEXT.finditer(text):
        parts.append(html.escape(text[end : match.start()]))
        end = match.end()
        env = match.group("env")
        if env is not None:
            parts.append(environment(env, match.group("body")))
            continue
        display = match.group("dd") or match.group("bracket")
        if display is not None:
            parts.append(to_mathml(display, display=True))
        else:
            parts.append(to_mathml(match.group("paren") or match.group("d") or "", display=False))
    parts.append(html.escape(text[end:]))
    return "".join(parts)
