"""Fixtures that run each store test against SQLite (a temp file) and PostgreSQL (a throwaway schema)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from nbrelay.store.sql import SqlJobStore

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL whose search_path is a fresh schema, dropped afterwards."""
    base = make_url(os.environ.get("NBRELAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    libpq_url = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(libpq_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        # Failing, not skipping: CI starts PostgreSQL first, so absence is a broken setup.
        pytest.fail(
            f"PostgreSQL is not reachable at {base.render_as_string(hide_password=True)}: {problem}\n"
            "Start it, or set NBRELAY_TEST_POSTGRES_URL, or deselect with -m 'not postgres'.",
            pytrace=False,
        )
    schema = f"nbrelay_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


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
