"""A cancel reaches the `nbrelay worker` running the job at once, as a Celery broadcast (CANCEL_COMMAND), not only
with the worker's next lease renewal; the broadcast alone stops the run, and a worker that does not run the job
ignores it."""

from __future__ import annotations

from typing import Any

import pytest

from nbrelay.config import Settings
from nbrelay.executor.celery_app import CANCEL_COMMAND, make_celery
from tests.executor.test_contract import NO_SPARE_KERNELS, started, wait_until

pytestmark = [pytest.mark.kernel, pytest.mark.postgres, pytest.mark.redis]


def broadcast_cancel(deployment: Any, job_id: int) -> list[dict[str, Any]]:
    """What a web node sends on a cancel, sent from here: the job's cancel_requested stays false in the store, so
    a lease renewal cannot be what stops it. The workers' replies."""
    env = deployment.workers[0].env
    settings = Settings(
        broker_url=env["NBRELAY_BROKER_URL"], celery_broker_url=env.get("NBRELAY_CELERY_BROKER_URL", "")
    )
    app = make_celery(settings)
    try:
        return list(app.control.broadcast(CANCEL_COMMAND, arguments={"job_id": job_id}, reply=True, timeout=5))
    finally:
        app.close()


@pytest.mark.parametrize("kind", ["celery", "celery-rabbitmq"])
def test_the_broadcast_stops_the_run_on_the_worker_that_has_it(deploy: Any, kind: str) -> None:
    d = deploy(kind, slots=1, workers=2, env=NO_SPARE_KERNELS)
    job_id = d.submit("sleep.ipynb", seconds=120)
    started(d, job_id)
    wait_until(d.kernels, 30, "the job's kernel runs")
    replies = broadcast_cancel(d, job_id)
    # Each worker answers; only the one running the job has it.
    answers = sorted(next(iter(reply.values()))["running"] for reply in replies)
    assert answers == [False, True], replies
    job = d.wait_for(job_id, timeout_s=60)  # the notebook sleeps 120 s
    assert job["state"] == "cancelled", d.logs()
    wait_until(lambda: not d.kernels(), 15, "no kernel is left")
    assert f"stopping job {job_id}: cancel requested" in d.logs()
