"""A real push service for the tests of it and of what transports share: a real hub (memory:// and sql://) and
a real SQLite store; no connection is open and no server runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbrelay.auth import Authenticator
from nbrelay.config import Settings
from nbrelay.hub import open_hub
from nbrelay.jobs import open_job_service
from nbrelay.metrics import Metrics
from nbrelay.push import Push
from nbrelay.store import open_store


@pytest.fixture(params=["memory://", "sql://"])
async def push(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Push]:
    settings = Settings(
        workspace=tmp_path / "workspace",
        data_dir=tmp_path / "data",
        broker_url=request.param,
        max_connections=3,
        max_connections_per_user=2,
    )
    settings.data_dir.mkdir(parents=True)
    store = open_store(settings.database_url)
    await store.start()
    database_url = settings.database_url  # the sql:// hub keeps its history beside the jobs
    hub = open_hub(request.param, database_url=database_url, history_size=5, history_ttl_s=60, subscriber_queue_size=64)
    service = Push(settings, hub, open_job_service(settings, store), Authenticator(settings, store), Metrics())
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        await store.close()
