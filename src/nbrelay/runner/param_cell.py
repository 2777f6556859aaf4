"""A Python `parameters` cell read with Python's own parser, not line by line.

papermill's reader (a regular expression per line) drops what it cannot match: a line with a second `=`
(`url = "https://host/?a=b"`, `opts = dict(a=1)`), a modern annotation (`n: int | None = None`,
`typing.Optional[int]`), and it runs a magic line into the previous default. Those parameters then did not exist for
the service, which refuses unknown names. Here each top-level assignment to a name is one parameter, with its
annotation and default as written and the comment that ends its last line as help; papermill's own reader is the
fallback for a cell that is no Python (then as before).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

# A line IPython reads as a magic or a shell escape, which Python's parser does not: blanked, so the rest is read.
_MAGIC = re.compile(r"^\s*[%!]")
_TYPE_COMMENT = re.compile(r"^type:\s*(\S+)\s*")


def read_python_cell(source: str) -> list[tuple[str, str, str, str]] | None:
    """(name, declared type or "None", default source, help) for each parameter, in order; a name assigned again
    keeps its first place and takes the later definition. None when the cell does not parse as Python."""
    lines = ["" if _MAGIC.match(line) else line for line in source.splitlines()]
    text = "\n".join(lines)
    try:
        tree = ast.parse(text)
        comments = _comments(text)
    except (SyntaxError, ValueError, tokenize.TokenError, RecursionError, MemoryError):
        return None
    found: dict[str, tuple[str, str, str, str]] = {}
    for statement in tree.body:
        targets: list[ast.expr]
        if isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, annotation = [statement.target], _annotation(text, statement.annotation)
        elif isinstance(statement, ast.Assign):
            targets, annotation = statement.targets, None
        else:
            continue
        comment = comments.get(statement.end_lineno or statement.lineno, "")
        hinted = _TYPE_COMMENT.match(comment)
        if hinted:
            comment = comment[hinted.end() :]
        declared = annotation or (hinted.group(1) if hinted else "None")
        default = ast.get_source_segment(text, statement.value) if statement.value is not None else None
        for target in targets:
            if isinstance(target, ast.Name) and default is not None:
                found[target.id] = (target.id, declared, default, comment)
    return list(found.values())


def _annotation(text: str, node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # n: "int" = 3
        return node.value.strip()
    segment = ast.get_source_segment(text, node)
    return " ".join(segment.split()) if segment else None


def _comments(text: str) -> dict[int, str]:
    """Each line's comment, without its '#'."""
    return {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(text).readline)
        if token.type == tokenize.COMMENT
    }
