"""(Re)write the example workspace notebooks and the test fixture notebooks.

Usage::

    .venv/bin/python scripts/make_notebooks.py

Every notebook is nbformat v4.5 with deterministic cell ids, so running the script
twice produces identical files. Outputs are empty, except ``tests/notebooks/big200.ipynb``
which is executed once with nbclient (an HTML-export benchmark needs real outputs).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat import v4

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "src" / "nbrelay" / "examples" / "workspace"
FIXTURES = ROOT / "tests" / "notebooks"

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
LANGUAGE_INFO = {"name": "python"}


def code(source: str, *, parameters: bool = False) -> nbformat.NotebookNode:
    cell = v4.new_code_cell(source.strip("\n"))
    if parameters:
        cell.metadata["tags"] = ["parameters"]
    return cell


def md(source: str) -> nbformat.NotebookNode:
    return v4.new_markdown_cell(source.strip("\n"))


def notebook(cells: list[nbformat.NotebookNode], kernelspec: dict | None = None) -> nbformat.NotebookNode:
    nb = v4.new_notebook()
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata = nbformat.from_dict(
        {"kernelspec": dict(kernelspec or KERNELSPEC), "language_info": dict(LANGUAGE_INFO)}
    )
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index:03d}"  # deterministic ids keep the files reproducible
    nb.cells = cells
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path), version=4)
    print(f"wrote {path.relative_to(ROOT)}")


def write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


# --------------------------------------------------------------------------- examples


def hello() -> nbformat.NotebookNode:
    return notebook(
        [
            md("# Hello, nbrelay\n\nA tiny parameterised notebook: change the parameters and run it again."),
            code(
                """
name: str = "world"  # who to greet
count: int = 3  # how many lines
ratio: float = 0.5  # a fraction shown as a percentage
shout: bool = False  # upper-case the greeting
""",
                parameters=True,
            ),
            code(
                """
greeting = f"Hello, {name}!"
if shout:
    greeting = greeting.upper()
for i in range(count):
    print(f"{i + 1}: {greeting}")
"""
            ),
            code(
                """
import html

from IPython.display import HTML

rows = [
    ("name", name),
    ("count", count),
    ("ratio", f"{ratio:.1%}"),
    ("shout", shout),
]
body = "".join(
    f"<tr><td><code>{html.escape(key)}</code></td><td>{html.escape(str(value))}</td></tr>"
    for key, value in rows
)
HTML(f"<table><thead><tr><th>parameter</th><th>value</th></tr></thead><tbody>{body}</tbody></table>")
"""
            ),
            md("That's all. The rendered report keeps the greeting and the parameter table above."),
        ]
    )


def plot() -> nbformat.NotebookNode:
    return notebook(
        [
            md("# Sine wave\n\nPlots a sine wave over one second."),
            code(
                """
frequency: float = 2.0  # sine frequency in Hz
points: int = 200
""",
                parameters=True,
            ),
            code(
                """
import math

import matplotlib.pyplot as plt

t = [i / (points - 1) for i in range(points)]
y = [math.sin(2 * math.pi * frequency * s) for s in t]

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(t, y)
ax.set_title(f"sin(2π · {frequency:g} Hz · t)")
ax.set_xlabel("t [s]")
ax.set_ylabel("amplitude")
ax.grid(True, alpha=0.3)
plt.show()
"""
            ),
        ]
    )


def fails() -> nbformat.NotebookNode:
    return notebook(
        [
            code("divisor: int = 0  # 0 makes cell 3 fail", parameters=True),
            code('print("about to divide 10 by", divisor)'),
            code("result = 10 / divisor\nresult"),
            code('print("never reached")'),
        ]
    )


def tour() -> nbformat.NotebookNode:
    """About 30 s in six steps that each print as they go: the page shows a run cell by cell, live."""
    return notebook(
        [
            md(
                "# A tour of a run\n\n"
                "Six steps of about five seconds each: watch the job on the page go cell by cell, with its output "
                "as it comes and the time left. The report keeps it all, the formula included."
            ),
            code(
                """
seconds_per_step: float = 5.0  # how long each step takes
samples: int = 400  # how many points the random walk has
seed: int = 7  # the same seed, the same walk
""",
                parameters=True,
            ),
            code(
                """
import random
import statistics
import time

from IPython.display import Markdown, Math, display


def step(title, doing):
    \"\"\"Say what the cell does, then take seconds_per_step over it, telling how far it got.\"\"\"
    print(title, flush=True)
    for part in range(1, 5):
        time.sleep(seconds_per_step / 4)
        print(f"  {doing}: {part * 25}%", flush=True)


step("Step 1 of 6: the data", "drawing a random walk")
random.seed(seed)
walk = [0.0]
for _ in range(samples - 1):
    walk.append(walk[-1] + random.gauss(0, 1))
print(f"{len(walk)} points, from {walk[0]:.1f} to {walk[-1]:.1f}")
"""
            ),
            code(
                """
step("Step 2 of 6: smoothing", "averaging")
window = 20
smooth = [statistics.fmean(walk[max(0, i - window) : i + 1]) for i in range(len(walk))]
print(f"moving average over {window} points")
"""
            ),
            code(
                """
step("Step 3 of 6: statistics", "summing up")
mean, spread = statistics.fmean(walk), statistics.pstdev(walk)
print(f"mean {mean:.2f}, standard deviation {spread:.2f}")
"""
            ),
            code(
                """
step("Step 4 of 6: the formula", "typesetting")
display(Math(rf"\\bar{{x}} = \\frac{{1}}{{n}} \\sum_{{i=1}}^{{n}} x_i = {mean:.2f}"))
"""
            ),
            code(
                """
step("Step 5 of 6: the picture", "drawing")
bars = "▁▂▃▄▅▆▇█"
low, high = min(smooth), max(smooth)
every = max(1, len(smooth) // 60)
print("".join(bars[int((v - low) / ((high - low) or 1) * (len(bars) - 1))] for v in smooth[::every]))
"""
            ),
            code(
                """
step("Step 6 of 6: the summary", "writing")
Markdown(
    "| samples | mean | standard deviation | last |\\n|---|---|---|---|\\n"
    f"| {samples} | {mean:.2f} | {spread:.2f} | {walk[-1]:.2f} |"
)
"""
            ),
        ]
    )


# --------------------------------------------------------------------------- fixtures


def params() -> nbformat.NotebookNode:
    return notebook(
        [
            code(
                """
n: int = 1
x: float = 0.5
label: str = "a"
flag: bool = False
items: list = []  # a list
opts: dict = {}
""",
                parameters=True,
            ),
            code('print(f"n={n} x={x} label={label} flag={flag} items={items} opts={opts}")'),
        ]
    )


def tiny() -> nbformat.NotebookNode:
    return notebook([code("x = 1", parameters=True), code("print(x + 1)")])


def fail() -> nbformat.NotebookNode:
    # No markdown cells: the failing cell must be notebook cell index 1.
    return notebook(
        [
            code('print("before")'),
            code('raise ValueError("boom in cell 2")'),
            code('print("after")'),
        ]
    )


def sleep() -> nbformat.NotebookNode:
    return notebook(
        [
            code("seconds: float = 30.0\ncells: int = 1", parameters=True),
            code("import time"),
            code('print("start", flush=True)'),
            code("time.sleep(seconds)"),
            code('print("done")'),
        ]
    )


def busy() -> nbformat.NotebookNode:
    return notebook(
        [
            code("seconds: float = 30.0", parameters=True),
            code(
                """
import time

t = time.time()
while time.time() - t < seconds:
    pass
"""
            ),
        ]
    )


def ignore_interrupt() -> nbformat.NotebookNode:
    return notebook(
        [
            code("seconds: float = 60.0", parameters=True),
            code(
                """
import signal
import time

signal.signal(signal.SIGINT, signal.SIG_IGN)
time.sleep(seconds)
"""
            ),
        ]
    )


def kill_self() -> nbformat.NotebookNode:
    return notebook(
        [
            code('print("alive", flush=True)'),
            code("import time\n\ntime.sleep(0.5)"),
            code("import os\nimport signal\n\nos.kill(os.getpid(), signal.SIGKILL)"),
            code('print("unreachable")'),
        ]
    )


def output() -> nbformat.NotebookNode:
    return notebook(
        [
            code("lines: int = 50\ndelay: float = 0.01", parameters=True),
            code(
                """
import time

for i in range(lines):
    print(f"line {i}", flush=True)
    time.sleep(delay)
"""
            ),
        ]
    )


def many_cells() -> nbformat.NotebookNode:
    cells = [code("k = 1", parameters=True)]
    cells += [code(f"x{i} = {i}") for i in range(1, 40)]
    return notebook(cells)


def big200() -> nbformat.NotebookNode:
    cells = []
    for i in range(100):
        cells.append(md(f"## Section {i}\n\nSome *markdown* text for section {i}."))
        if i % 2 == 0:
            cells.append(code(f'for j in range(3):\n    print(f"section {i} line {{j}}")'))
        else:
            cells.append(code(f"v{i} = {i} * {i}\nv{i}"))
    return notebook(cells)


def no_params() -> nbformat.NotebookNode:
    return notebook([code("a = 1"), code("print(a + 1)")])


def unknown_kernel() -> nbformat.NotebookNode:
    spec = {"name": "no-such-kernel-xyz", "display_name": "No Such Kernel", "language": "python"}
    return notebook([code('print("hi")')], kernelspec=spec)


def execute_in_place(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Execute ``nb`` with nbclient, keeping metadata minimal and free of timestamps."""
    metadata = json.loads(json.dumps(nb.metadata))
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(
            nb,
            kernel_name="python3",
            timeout=120,
            record_timing=False,
            resources={"metadata": {"path": tmp}},
        )
        client.execute()
    nb.metadata = nbformat.from_dict(metadata)
    return nb


def main() -> None:
    write(hello(), EXAMPLES / "hello.ipynb")
    write(plot(), EXAMPLES / "plot.ipynb")
    write(fails(), EXAMPLES / "fails.ipynb")
    write(tour(), EXAMPLES / "tour.ipynb")
    write_text(
        "Reports of runs are kept by the server under its data dir; this folder only shows that sub-folders work.\n",
        EXAMPLES / "reports" / "README.md",
    )

    write(params(), FIXTURES / "params.ipynb")
    write(tiny(), FIXTURES / "tiny.ipynb")
    write(fail(), FIXTURES / "fail.ipynb")
    write(sleep(), FIXTURES / "sleep.ipynb")
    write(busy(), FIXTURES / "busy.ipynb")
    write(ignore_interrupt(), FIXTURES / "ignore_interrupt.ipynb")
    write(kill_self(), FIXTURES / "kill_self.ipynb")
    write(output(), FIXTURES / "output.ipynb")
    write(many_cells(), FIXTURES / "many_cells.ipynb")
    write(execute_in_place(big200()), FIXTURES / "big200.ipynb")
    write(no_params(), FIXTURES / "no_params.ipynb")
    write(unknown_kernel(), FIXTURES / "unknown_kernel.ipynb")

    write_text('{"cells": [\n', FIXTURES / "malformed.ipynb")
    write_text('{"cells": "nope", "nbformat": 4}\n', FIXTURES / "invalid_schema.ipynb")
    write_text("This is a plain text file, not a notebook.\n", FIXTURES / "not_a_notebook.txt")


if __name__ == "__main__":
    main()
