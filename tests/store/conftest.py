"""Fixtures that run each store test against SQLite (a temp file) and PostgreSQL (a throwaway schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbrelay.store.sql import SqlJobStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A missing parent directory on purpose: the store must create it.
        return f"sqlite:///{tmp_path / 'data' / 'jobs.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlJobStore]:
    s = SqlJobStore(db_url)
    await s.start()
    try:
        yield s
    finally:
        await s.close()
