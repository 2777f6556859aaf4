"""Where a tiny job's time goes inside a worker: runs `run_job` in-process, as a worker does, timing each phase.

    .venv/bin/python bench/phases.py [--jobs 8] [--spacing 0]

--spacing 0 submits back to back (as F1 does); --spacing 1.5 leaves the kernel pool time to refill between jobs.
A diagnostic for the figures in docs/benchmarks.md, not a benchmark: it wraps nbrelay internals and prints ms.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from notebooks import TINY_NAME, write_tiny

PHASES: dict[str, list[float]] = defaultdict(list)


def timed(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)
    if asyncio.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                PHASES[label].append(time.perf_counter() - start)

        setattr(owner, name, async_wrapper)
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            PHASES[label].append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


async def run(jobs: int, spacing_s: float, folder: Path) -> list[float]:
    from nbrelay.runner import execute
    from nbrelay.runner.html import ReportWriter
    from nbrelay.runner.kernels import Kernel, KernelPool

    timed(KernelPool, "acquire", "1 kernel acquire")
    timed(execute, "_enter_folder", "2 enter folder")
    timed(execute.Supervisor, "run", "3 execute cells")
    timed(Kernel, "shutdown", "4 kernel shutdown")
    timed(ReportWriter, "write", "5 write .ipynb + .html")

    notebook = write_tiny(folder)
    pool = KernelPool(size=1, cwd=folder, startup_timeout_s=60, fork=True)
    reports = ReportWriter()
    reports.to_html(execute.load_notebook(notebook))  # as the worker warms its exporter
    pool.refill("python3")
    await asyncio.sleep(3)
    PHASES.clear()
    totals = []
    try:
        for i in range(jobs):
            spec = execute.RunSpec(
                job_id=i,
                notebook_path=notebook,
                kernel_name="python3",
                parameters={"x": 5},
                report_path=folder / f"out{i}.html",
                output_path=folder / f"out{i}.ipynb",
            )
            start = time.perf_counter()
            outcome = await execute.run_job(spec, pool, reports, lambda kind, data: None, asyncio.Event())
            totals.append(time.perf_counter() - start)
            if outcome.state.value != "succeeded":
                raise RuntimeError(f"job {i}: {outcome}")
            await asyncio.sleep(spacing_s)
    finally:
        await pool.close()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=0.0, help="idle seconds between jobs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbrelay-bench-phases-") as scratch:
        os.environ["NBRELAY_RUNTIME_DIR"] = scratch
        os.environ["JUPYTER_RUNTIME_DIR"] = scratch
        totals = asyncio.run(run(args.jobs, args.spacing, Path(scratch) / "workspace"))

    def row(label: str, values: list[float]) -> str:
        return f"{label:26s}" + "".join(f"{v * 1000:6.0f}" for v in values)

    print(f"ms per job, {args.jobs} jobs, {args.spacing:g} s apart ({TINY_NAME}, -p x 5)")
    for label in sorted(PHASES):
        print(row(label, PHASES[label][: args.jobs]))  # pool.close() adds shutdowns after the jobs
    print(row("run_job total", totals))


if __name__ == "__main__":
    main()
