"""Shared pieces of the benchmarks: a server under test, the CLI baseline pipeline, timing and statistics."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
PAPERMILL = VENV_BIN / "papermill"
JUPYTER = VENV_BIN / "jupyter"


# statistics ----------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """Repeated measurements of one quantity (seconds, or jobs/min), with their median and spread."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "n": len(self.values),
            "values": self.values,
        }


def fmt_seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def spread(sample: Sample, unit: str = "s") -> str:
    if unit == "s":
        return f"{fmt_seconds(sample.low)}..{fmt_seconds(sample.high)}"
    return f"{sample.low:.0f}..{sample.high:.0f}"


# processes -----------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment for everything the benchmarks start: no NBRELAY_* from the caller, scratch runtime dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBRELAY_")}
    runtime = tmp / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    env["JUPYTER_RUNTIME_DIR"] = str(runtime)
    env["NBRELAY_RUNTIME_DIR"] = str(runtime)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process, its live descendants and the children they have waited for."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def children_cpu_s() -> float:
    """CPU seconds of the subprocesses this process has waited for (the baseline pipelines and their kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop_tree(proc: subprocess.Popen[bytes], grace_s: float = 25.0) -> None:
    """SIGTERM (graceful: workers shut their kernels down), then SIGKILL whatever of the process tree is left."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    _gone, alive = psutil.wait_procs(descendants, timeout=5)
    for child in alive:  # forked kernels live in sessions of their own: end them by pid
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=5)


class Server:
    """An nbrelay server in its own session, on a free port; `stop()` ends it and everything it started."""

    def __init__(self, tmp: Path, workspace: Path, *, workers: int, env: dict[str, str] | None = None):
        self.tmp = tmp
        self.env = env or {}
        self.workspace = workspace
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{self.port}.log"
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def start(self, health_timeout_s: float = 90.0) -> None:
        cmd = [
            str(PYTHON),
            "-m",
            "nbrelay",
            "serve",
            "--port",
            str(self.port),
            "--workspace",
            str(self.workspace),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
            "--no-examples",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.tmp,
                env={**clean_env(self.tmp), **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + health_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if self.http.get("/api/health").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer /api/health within {health_timeout_s:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (graceful: workers shut their kernels down), then SIGKILL whatever of ours is left."""
        self.http.close()
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_tree(proc)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the REST API, as a client would use it ---------------------------------------------------------------
    def submit(self, notebook: str, parameters: dict[str, Any]) -> int:
        response = self.http.post("/api/jobs", json={"notebook": notebook, "parameters": parameters})
        if response.status_code != 202:
            raise RuntimeError(f"submit answered {response.status_code}: {response.text[:300]}\n{self.log_tail()}")
        return int(response.json()["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.http.get(f"/api/jobs/{job_id}")
        response.raise_for_status()
        return dict(response.json())

    def wait_done(self, job_id: int, poll_s: float, timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll until the job is finished; raises unless it succeeded."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["state"] not in ("queued", "running"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {job['state']} after {timeout_s:g} s")
            time.sleep(poll_s)
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['state']}: {job.get('error')}\n{self.log_tail()}")
        return job

    def wait_report(self, report_url: str, poll_s: float, timeout_s: float = 30.0) -> int:
        """Poll the report until it answers 200; returns its size in bytes."""
        deadline = time.monotonic() + timeout_s
        while True:
            response = self.http.get(report_url)
            if response.status_code == 200:
                return len(response.content)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{report_url} still answers {response.status_code} after {timeout_s:g} s")
            time.sleep(poll_s)

    def run_one(self, notebook: str, parameters: dict[str, Any], poll_s: float) -> dict[str, Any]:
        """Submit, wait until succeeded and the report is served; the job as last read."""
        job = self.wait_done(self.submit(notebook, parameters), poll_s)
        if not job.get("report_url"):
            raise RuntimeError(f"job {job['id']} succeeded without a report_url")
        self.wait_report(job["report_url"], poll_s)
        return job


# the baseline: the CLI tools, one interpreter per step -----------------------------------------------------------
def run_checked(cmd: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(list(cmd), cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{tail}")


def cli_pipeline(folder: Path, notebook: str, env: dict[str, str], out_stem: str = "out") -> float:
    """`papermill NB out.ipynb -p x 5 && jupyter nbconvert --to html out.ipynb`; wall seconds."""
    out = f"{out_stem}.ipynb"
    start = time.perf_counter()
    run_checked([str(PAPERMILL), notebook, out, "-p", "x", "5"], folder, env)
    run_checked([str(JUPYTER), "nbconvert", "--to", "html", out], folder, env)
    elapsed = time.perf_counter() - start
    if not (folder / f"{out_stem}.html").is_file():
        raise RuntimeError(f"nbconvert wrote no {out_stem}.html in {folder}")
    return elapsed


class Retries:
    """Redo a baseline measurement whose CLI run failed (e.g. "Kernel died before replying to kernel_info" when
    another kernel took its TCP port): the failed attempt's time is dropped, and the failure is counted and shown.
    """

    def __init__(self, attempts: int = 3):
        self.attempts = attempts
        self.failures: list[str] = []

    def run(self, measure: Callable[[], float]) -> float:
        for attempt in range(self.attempts):
            try:
                return measure()
            except RuntimeError as exc:
                self.failures.append(str(exc).strip().splitlines()[-1][:200])
                if attempt == self.attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def note(self) -> str | None:
        if not self.failures:
            return None
        return f"baseline runs redone after a CLI failure: {len(self.failures)} ({self.failures[-1]})"
