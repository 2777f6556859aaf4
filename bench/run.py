"""nbrelay benchmarks, each against a baseline measured by the same command in the same run.

    .venv/bin/python bench/run.py [--only F1,F2,F3] [--quick]

F1  tiny notebook, submit -> report ready ->     vs  papermill + jupyter nbconvert (CLI), one run
    client notified (terminal event on the WebSocket)
F2  twenty tiny notebooks, jobs per minute          vs  the same CLI pipeline, two at a time
F3  200-cell notebook, last cell ends -> report     vs  jupyter nbconvert --to html (CLI) of the same executed
    ready (its terminal event on the WebSocket)          notebook

Prints a table and writes bench/results/latest.json. Timings live here only, never in the tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat

from common import (
    JUPYTER,
    ROOT,
    Retries,
    Sample,
    Server,
    children_cpu_s,
    clean_env,
    cli_pipeline,
    fmt_seconds,
    run_checked,
    spread,
    tree_cpu_s,
)
from notebooks import BIG200, TINY_NAME, write_tiny

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
POLL_S = 0.005  # warm-up jobs and the report checks: how often the client asks for the job, then for the report
WARM_S = 5.0  # after /api/health: worker processes are still pre-starting kernels and warming the exporter
SETTLE_S = 2.0  # after a warm-up job, so its pool refill is not billed to the first measured job
PARAMS = {"x": 5}  # the same value the baseline passes with `-p x 5`


@dataclass
class Row:
    key: str
    name: str
    unit: str  # "s" or "jobs/min"
    nbrelay: Sample
    baseline_name: str
    baseline: Sample
    target_op: str  # "<=" or ">="
    target: float
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.nbrelay.median / self.baseline.median

    @property
    def passed(self) -> bool:
        return self.ratio <= self.target if self.target_op == "<=" else self.ratio >= self.target

    def figure(self, sample: Sample) -> str:
        if self.unit == "s":
            return f"{fmt_seconds(sample.median)} ({spread(sample)}, n={len(sample.values)})"
        return f"{sample.median:.0f} jobs/min ({spread(sample, 'n')}, n={len(sample.values)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "nbrelay": self.nbrelay.to_dict(),
            "baseline_name": self.baseline_name,
            "baseline": self.baseline.to_dict(),
            "ratio": self.ratio,
            "target": f"{self.target_op} {self.target:g}",
            "passed": self.passed,
            "notes": self.notes,
            **self.extra,
        }


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_server(server: Server) -> None:
    """One untimed job per worker (dispatch goes to the worker idle longest): a worker's first report learns the
    kernel's language_info and renders the frame, as on a server that has run a job."""
    say(f"  server on {server.url} ({server.workers} workers) is up; letting it warm for {WARM_S:g} s")
    time.sleep(WARM_S)
    for _ in range(server.workers):
        server.run_one(TINY_NAME, PARAMS, POLL_S)
    time.sleep(SETTLE_S)


@contextmanager
def tiny_scenario(prefix: str, warmup_stem: str) -> Iterator[tuple[Path, dict[str, str], Server]]:
    """F1 and F2's set-up: a scratch folder with the tiny notebook for both sides, a CLI pipeline run once
    (disk cache, bytecode), and a started, warmed nbrelay server with 2 workers, stopped at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        tmp = Path(scratch)
        workspace = tmp / "workspace"
        write_tiny(workspace)
        folder = tmp / "cli"
        write_tiny(folder)
        env = clean_env(tmp)
        cli_pipeline(folder, TINY_NAME, env, warmup_stem)
        server = Server(tmp, workspace, workers=2)
        try:
            server.start()
            warm_server(server)
            yield folder, env, server
        finally:
            server.stop()


# F1 ------------------------------------------------------------------------------------------------------------
def submit_notified(
    server: Server, client: Any, notebook: str, parameters: dict[str, Any], count: int = 1
) -> tuple[float, float, list[int]]:
    """Submit `notebook` `count` times, one request after the other, once the WebSocket is subscribed; (time of
    the first submit, time the last job's terminal event arrived, the job ids), by the wall clock (time.time()).
    Raises unless every job succeeded."""
    from nbrelay.client import TERMINAL_EVENTS

    ids: list[int] = []
    submitted = 0.0

    def submit() -> None:
        nonlocal submitted
        submitted = time.time()
        ids.extend(server.submit(notebook, parameters) for _ in range(count))

    ended: set[int] = set()
    for message in client.events(on_subscribed=submit):
        data = message.get("data") or {}
        if message.get("type") in TERMINAL_EVENTS and data.get("job") in ids:
            received = time.time()
            if message["type"] != "job.succeeded":
                raise RuntimeError(f"job {data['job']} ended with {message['type']}: {data.get('error')}")
            ended.add(data["job"])
            if len(ended) == count:
                return submitted, received, ids
    raise RuntimeError("the event stream ended before the jobs did")


def f1_job(server: Server, client: Any) -> tuple[float, dict[str, Any]]:
    """Seconds from the tiny notebook's submit (HTTP) to its terminal event on the WebSocket (a job ends once its
    report is written), and the job. The report is then fetched (not timed) to check that it is served."""
    submitted, received, (job_id,) = submit_notified(server, client, TINY_NAME, PARAMS)
    job = server.job(job_id)
    if server.http.get(job["report_url"]).status_code != 200:
        raise RuntimeError(f"job {job_id}: succeeded, but its report is not served")
    return received - submitted, job


def bench_f1(quick: bool) -> Row:
    """Rounds of [2 nbrelay jobs back to back, 1 CLI pipeline]; each job timed from its submit (HTTP) to its
    terminal event on the browser's WebSocket, as a user waits.

    Interleaving lets both sides see the same neighbours on the shared cores; the idle server uses well under 1%
    of a core while the CLI pipeline runs. Two back-to-back runs after an idle moment behave like any two
    consecutive runs of a longer back-to-back chain (see docs/benchmarks.md: the pool refill alternates).
    """
    from nbrelay.client import Client

    rounds = 2 if quick else 10
    retries = Retries()
    nbrelay, baseline = Sample(), Sample()
    server_durations: list[float] = []
    server_cpu: list[float] = []
    base_cpu: list[float] = []
    with tiny_scenario("nbrelay-bench-f1-", "out") as (folder, env, server), Client(server.url) as client:
        assert server.proc is not None
        for r in range(rounds):
            cpu0 = tree_cpu_s(server.proc.pid)
            for _ in range(2):
                wait_s, job = f1_job(server, client)
                nbrelay.add(wait_s)
                server_durations.append(float(job["duration_s"]))
            server_cpu.append((tree_cpu_s(server.proc.pid) - cpu0) / 2)
            cpu0 = children_cpu_s()
            baseline.add(retries.run(lambda: cli_pipeline(folder, TINY_NAME, env)))
            base_cpu.append(children_cpu_s() - cpu0)  # a failed attempt's CPU is included: rare, and small
            say(
                f"  round {r + 1}/{rounds}: nbrelay back to back "
                f"{', '.join(fmt_seconds(v) for v in nbrelay.values[-2:])}; "
                f"CLI pipeline {fmt_seconds(baseline.values[-1])}"
            )
    server_cpu_per_job = Sample(server_cpu).median
    base_cpu_per_job = Sample(base_cpu).median

    row = Row(
        "F1",
        "tiny notebook, submit -> report ready -> client notified",
        "s",
        nbrelay,
        "papermill + jupyter nbconvert (CLI)",
        baseline,
        "<=",
        0.03,
    )
    durations = Sample(server_durations)
    row.notes.append(
        f"submit (HTTP) -> terminal event on the WebSocket; job duration_s as the server records it (dispatched "
        f"-> finished): median {fmt_seconds(durations.median)}, {spread(durations)}"
    )
    firsts, seconds = Sample(nbrelay.values[0::2]), Sample(nbrelay.values[1::2])
    row.notes.append(
        f"first run of each pair median {fmt_seconds(firsts.median)}; second run (right after: the kernel pool "
        f"is still refilling) median {fmt_seconds(seconds.median)}"
    )
    if retries.note():
        row.notes.append(str(retries.note()))
    row.notes.append(
        f"CPU per job: nbrelay server tree {server_cpu_per_job:.2f} CPU-s, CLI pipeline {base_cpu_per_job:.2f} CPU-s"
    )
    row.extra = {
        "server_duration_s": durations.to_dict(),
        "first_of_pair": firsts.to_dict(),
        "second_of_pair": seconds.to_dict(),
        "cpu_s_per_job": {"nbrelay": server_cpu_per_job, "baseline": base_cpu_per_job},
        "baseline_failures": retries.failures,
    }
    return row


# F2 ------------------------------------------------------------------------------------------------------------
def cli_batch(folder: Path, env: dict[str, str], jobs: int) -> float:
    """`jobs` CLI pipelines through a pool of 2; wall seconds for the whole batch."""
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        list(pool.map(lambda k: cli_pipeline(folder, TINY_NAME, env, f"out{k}"), range(jobs)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure, do not start the rest of the batch
    return time.perf_counter() - start


def bench_f2(quick: bool) -> Row:
    """Rounds of [nbrelay batch, CLI batch], so that both sides see the same neighbours on the shared cores. A batch
    is timed as a user waits: from its first submit (HTTP) to the last job's terminal event on the WebSocket.

    The server stays up, idle (well under 1% of a core), while the CLI batch of its round runs.
    """
    from nbrelay.client import Client

    rounds = 1 if quick else 3
    jobs = 20
    retries = Retries()
    nbrelay, baseline = Sample(), Sample()
    cpu_per_job: list[float] = []
    base_cpu_per_job: list[float] = []
    with tiny_scenario("nbrelay-bench-f2-", "warmup") as (folder, env, server), Client(server.url) as client:
        assert server.proc is not None
        for i in range(rounds):
            if i:
                time.sleep(SETTLE_S)
            cpu0 = tree_cpu_s(server.proc.pid)
            submitted, received, ids = submit_notified(server, client, TINY_NAME, PARAMS, jobs)
            elapsed = received - submitted
            cpu_per_job.append((tree_cpu_s(server.proc.pid) - cpu0) / jobs)
            for job_id in ids:  # checked, not timed: every job has its report
                server.wait_report(server.job(job_id)["report_url"], POLL_S, timeout_s=5)
            nbrelay.add(jobs / elapsed * 60)
            say(f"  nbrelay batch {i + 1}/{rounds}: {jobs} jobs in {elapsed:.2f} s = {nbrelay.values[-1]:.0f}/min")

            cpu0 = children_cpu_s()
            elapsed = retries.run(lambda: cli_batch(folder, env, jobs))
            base_cpu_per_job.append((children_cpu_s() - cpu0) / jobs)
            baseline.add(jobs / elapsed * 60)
            say(f"  CLI batch {i + 1}/{rounds}: {jobs} pipelines in {elapsed:.2f} s = {baseline.values[-1]:.0f}/min")

    row = Row(
        "F2",
        "twenty tiny notebooks, jobs per minute",
        "jobs/min",
        nbrelay,
        "CLI pipeline, 2 at a time",
        baseline,
        ">=",
        20,
    )
    row.notes.append(
        f"--workers 2; CPU per job: nbrelay {Sample(cpu_per_job).median:.2f} CPU-s, "
        f"CLI pipeline {Sample(base_cpu_per_job).median:.2f} CPU-s (2 cores: CPU-bound ceiling = 120 / CPU-s per job)"
    )
    paired = [n / b for n, b in zip(nbrelay.values, baseline.values, strict=True)]
    row.notes.append(
        f"ratio per round (nbrelay batch / the CLI batch right after it): {', '.join(f'{r:.1f}' for r in paired)}"
    )
    if retries.note():
        row.notes.append(str(retries.note()))
    row.extra = {
        "baseline_failures": retries.failures,
        "jobs": jobs,
        "cpu_s_per_job": {"nbrelay": cpu_per_job, "baseline": base_cpu_per_job},
        "ratio_per_round": paired,
    }
    return row


# F3 ------------------------------------------------------------------------------------------------------------
F3_NAME = "big200.ipynb"


def last_cell_end(nb: dict[str, Any]) -> float:
    """When the notebook's last code cell ended, as the run recorded it: the kernel's execute_reply time (epoch s)."""
    ends = [
        c["metadata"]["execution"]["shell.execute_reply"]
        for c in nb["cells"]
        if c["cell_type"] == "code" and "shell.execute_reply" in c.get("metadata", {}).get("execution", {})
    ]
    if not ends:
        raise RuntimeError("the executed notebook records no execute_reply time")
    return datetime.fromisoformat(ends[-1]).timestamp()


def f3_job(server: Server, client: Any) -> dict[str, float]:
    """Submit the 200-cell notebook once the WebSocket is subscribed; the terminal event's arrival against the
    last cell's end (wall clock: the kernel stamps its replies with this machine's clock)."""
    _, received, (job_id,) = submit_notified(server, client, F3_NAME, {})
    job = server.job(job_id)
    response = server.http.get(f"/api/jobs/{job_id}/notebook")
    response.raise_for_status()
    executed = response.json()
    ended = last_cell_end(executed)
    finished = datetime.fromisoformat(job["finished_at"]).timestamp()
    return {
        "wait_s": received - ended,
        "worker_s": finished - ended,
        "push_s": received - finished,
        "duration_s": float(job["duration_s"]),
        "job": job_id,
    }


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    run_checked(cmd, cwd, env)
    return time.perf_counter() - start


def f3_components(executed: Path, reps: int) -> dict[str, Sample]:
    """In this process, on the executed notebook: the plain export (what the report cost before), and the write at
    a job's end once its pieces are rendered (the .ipynb, then the join), with the pieces' rendering beside."""
    from nbrelay.runner.html import ReportWriter
    from nbrelay.runner.notebook import runs

    nb = nbformat.read(executed, as_version=4)
    writer = ReportWriter()
    writer.to_html(copy.deepcopy(nb))  # warmed, as a worker warms its exporter
    figures = {"plain export": Sample(), "pieces, all cells": Sample(), "write at the end": Sample()}
    with tempfile.TemporaryDirectory(prefix="nbrelay-bench-f3-parts-") as scratch:
        for _ in range(reps):
            copied = copy.deepcopy(nb)
            start = time.perf_counter()
            writer.to_html(copied)
            figures["plain export"].add(time.perf_counter() - start)
            if not hasattr(writer, "pieces"):  # PYTHONPATH=<an older src>: the code before incremental reports
                continue
            start = time.perf_counter()
            pieces = writer.pieces(copied)  # as a job's start: inputs highlighted, cells that will not run rendered
            for index, cell in enumerate(copied.cells):
                if runs(cell):
                    pieces.cell_done(index)  # as each code cell ends
            pieces.submit(lambda: None).result()
            figures["pieces, all cells"].add(time.perf_counter() - start)
            start = time.perf_counter()
            pieces.write(html_path=Path(scratch) / "r.html", ipynb_path=Path(scratch) / "r.ipynb").result()
            figures["write at the end"].add(time.perf_counter() - start)
    return figures


def bench_f3(quick: bool) -> Row:
    """Rounds of [one 200-cell job through a server, watched over its WebSocket; the CLI export of the notebook
    that job executed], so that both sides see the same neighbours on the shared cores."""
    from nbrelay.client import Client

    reps, base_reps = (3, 2) if quick else (7, 5)
    retries = Retries()
    nbrelay, baseline, worker, push, duration = Sample(), Sample(), Sample(), Sample(), Sample()
    with tempfile.TemporaryDirectory(prefix="nbrelay-bench-f3-") as scratch:
        tmp = Path(scratch)
        workspace = tmp / "workspace"
        workspace.mkdir()
        shutil.copy(BIG200, workspace / F3_NAME)
        env = clean_env(tmp)
        executed = tmp / "executed.ipynb"
        cmd = [str(JUPYTER), "nbconvert", "--to", "html", str(executed), "--output-dir", str(tmp), "--output", "cli"]
        server = Server(tmp, workspace, workers=2)
        try:
            server.start()
            say(f"  server on {server.url} (2 workers) is up; letting it warm for {WARM_S:g} s")
            time.sleep(WARM_S)
            with Client(server.url) as client:
                # One job per worker first (dispatch goes to the worker idle longest): each worker's first report
                # learns the kernel's language_info and renders the frame, as on a server that has run a job.
                for _ in range(2):
                    first = f3_job(server, client)
                    say(f"  warm-up job: last cell -> terminal event {fmt_seconds(first['wait_s'])}")
                    time.sleep(SETTLE_S)
                response = server.http.get(f"/api/jobs/{int(first['job'])}/notebook")
                response.raise_for_status()
                executed.write_bytes(response.content)
                run_checked(cmd, tmp, env)  # the CLI's warm-up (disk cache, bytecode)
                for i in range(max(reps, base_reps)):
                    if i < reps:
                        figures = f3_job(server, client)
                        nbrelay.add(figures["wait_s"])
                        worker.add(figures["worker_s"])
                        push.add(figures["push_s"])
                        duration.add(figures["duration_s"])
                        time.sleep(SETTLE_S)
                    if i < base_reps:
                        baseline.add(retries.run(lambda: timed_run(cmd, tmp, env)))
                    say(
                        f"  round {i + 1}: last cell -> terminal event {fmt_seconds(nbrelay.values[-1])} "
                        f"(worker {fmt_seconds(worker.values[-1])}, push {fmt_seconds(push.values[-1])}); "
                        f"jupyter nbconvert {fmt_seconds(baseline.values[-1])}"
                    )
        finally:
            server.stop()
        components = f3_components(executed, 2 if quick else 5)

    row = Row(
        "F3",
        "200-cell notebook, last cell ends -> report ready (terminal event)",
        "s",
        nbrelay,
        "jupyter nbconvert --to html (CLI)",
        baseline,
        "<=",
        0.1,
    )
    row.notes.append(
        "from the last cell's execute_reply time in the executed notebook to the job's terminal event arriving on "
        "the client's WebSocket (the report is written before the job ends); baseline: the whole CLI command on "
        "the notebook that job executed"
    )
    row.notes.append(
        f"split at the job's finished_at: worker side (report write, kernel shutdown, store) median "
        f"{fmt_seconds(worker.median)} ({spread(worker)}), push (hub, WebSocket) {fmt_seconds(push.median)} "
        f"({spread(push)}); the whole job (dispatched -> finished) {fmt_seconds(duration.median)} ({spread(duration)})"
    )
    if components["pieces, all cells"].values:
        plain = components["plain export"]
        row.notes.append(
            f"in-process on the executed notebook (median of {len(plain.values)}): plain export "
            f"{fmt_seconds(plain.median)}; "
            f"the write at a job's end once its pieces are rendered (.ipynb + join) "
            f"{fmt_seconds(components['write at the end'].median)}; rendering all 200 pieces, on the job's report "
            f"thread while cells run, {fmt_seconds(components['pieces, all cells'].median)}"
        )
    else:
        row.notes.append(f"in-process: plain export {fmt_seconds(components['plain export'].median)}")
    if retries.note():
        row.notes.append(str(retries.note()))
    row.extra = {
        "baseline_failures": retries.failures,
        "worker_s": worker.to_dict(),
        "push_s": push.to_dict(),
        "job_duration_s": duration.to_dict(),
        "components_s": {k: v.to_dict() for k, v in components.items() if v.values},
    }
    return row


BENCHMARKS: dict[str, Callable[[bool], Row]] = {"F1": bench_f1, "F2": bench_f2, "F3": bench_f3}


# output --------------------------------------------------------------------------------------------------------
def print_table(rows: list[Row]) -> None:
    header = ["", "benchmark", "nbrelay (median, min..max, n)", "baseline", "baseline figure", "ratio", "target", ""]
    lines = [
        [
            r.key,
            r.name,
            r.figure(r.nbrelay),
            r.baseline_name,
            r.figure(r.baseline),
            f"{r.ratio:.3f}",
            f"{r.target_op} {r.target:g}",
            "PASS" if r.passed else "FAIL",
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print()
    for r in rows:
        for note in r.notes:
            print(f"{r.key}: {note}")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run, e.g. F1,F3")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run, not for figures)")
    args = parser.parse_args()
    wanted = [k.strip().upper() for k in args.only.split(",") if k.strip()] or list(BENCHMARKS)
    unknown = [k for k in wanted if k not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop servers

    signal.signal(signal.SIGTERM, on_term)
    info = machine()
    say(f"{info['cpus']} CPUs, load average {info['loadavg_at_start']}; {'quick' if args.quick else 'full'} run")
    rows: list[Row] = []
    started = time.perf_counter()
    for key in wanted:
        say(f"{key}: {BENCHMARKS[key].__name__} ...")
        load_before = os.getloadavg()[0]
        row = BENCHMARKS[key](args.quick)
        # The cores are shared: a load average above ~0.5 before our own work means someone else was busy too.
        row.extra["loadavg_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
        row.notes.append(
            f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores, shared)"
        )
        rows.append(row)
    info["loadavg_at_end"] = os.getloadavg()
    print()
    print_table(rows)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "bench/run.py " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": info,
        "benchmarks": {r.key: r.to_dict() for r in rows},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {RESULTS.relative_to(ROOT)}")
    return 0  # a missed target shows as FAIL in the table; it is a finding, not a crash


if __name__ == "__main__":
    sys.exit(main())
