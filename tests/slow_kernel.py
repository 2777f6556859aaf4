"""A real ipykernel that starts only once the test opens its gate: a kernelspec of the test's own, found through
JUPYTER_PATH, so a test can watch what clients show while a job's kernel starts, for as long as it needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAME = "gated"


class GatedKernel:
    def __init__(self, root: Path):
        self.gate = root / "gate-open"
        spec = root / "jupyter" / "kernels" / NAME
        spec.mkdir(parents=True, exist_ok=True)
        wait = f'while [ ! -e "{self.gate}" ]; do sleep 0.05; done; exec "$0" -m ipykernel_launcher "$@"'
        argv = ["/bin/sh", "-c", wait, sys.executable, "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Gated", "language": "python"}))
        # No warm kernels (each job waits at the gate), and time enough for a slow test to look.
        self.env = {
            "JUPYTER_PATH": str(root / "jupyter"),
            "NBRELAY_KERNEL_POOL_SIZE": "0",
            "NBRELAY_KERNEL_STARTUP_TIMEOUT_S": "600",
        }

    def open(self) -> None:
        self.gate.touch()

    def close(self) -> None:
        self.gate.unlink(missing_ok=True)
