"""What a worker is asked to run: the job's notebook, parameters, where its report and notebook go, its limits.
Made by the server (recorder.py) and read by the worker (execute.py); kept apart from the runner so that the server
does not import the execution stack (nbclient, nbconvert) to make one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    job_id: int
    notebook_path: Path
    kernel_name: str
    parameters: dict[str, Any]
    report_path: Path
    output_path: Path
    timeout_s: float | None = None
    cell_timeout_s: float | None = None
    interrupt_grace_s: float = 3.0
    output_throttle_s: float = 0.25
    output_max_chars: int = 4000  # of one live job.output event
    cell_output_max_chars: int = 2_000_000  # kept in the notebook and report per cell (head and tail)
    job_output_max_chars: int = 20_000_000  # kept in all
    kernel_memory_max_mb: int = 0  # the kernel's memory limit (set where it starts, see lifeline.py); 0: none
