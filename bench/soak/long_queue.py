"""A long queue on the embedded default, for the figures of docs/reliability.md (tests/chaos/test_jobs.py queues
120 in CI).

    .venv/bin/python bench/soak/long_queue.py [--jobs 1000] [--workers 2]

Submits the tiny notebook `--jobs` times at once, then until every job has ended polls the running count (the cap
is `--workers`) and times GET /api/jobs. Prints the figures and writes bench/results/queue.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the harness lives with the tests

from tests.chaos.jobs import queue_run, tagged_processes  # noqa: E402
from tests.chaos.scenario import MemoryPeak  # noqa: E402
from tests.conftest import NOTEBOOKS, ServerProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "queue.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nbrelay-queue-"))
    shutil.copytree(NOTEBOOKS, root / "workspace")
    tag = uuid.uuid4().hex
    server = ServerProcess(root / "workspace", root / "data", workers=args.workers, env={"NBR_TEST_TAG": tag})
    try:
        server.start(timeout_s=300)
        with MemoryPeak(server) as memory:
            figures = queue_run(server, args.jobs)
    finally:
        server.stop()
    result = asdict(figures) | {"peak_rss_mb": round(memory.peak_bytes / 2**20, 1)}
    result |= {"processes_left": len(tagged_processes(tag)), "when": datetime.now(UTC).isoformat(timespec="seconds")}
    print(json.dumps(result, indent=2, sort_keys=True))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, sort_keys=True))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
