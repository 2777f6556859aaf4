"""API-token storage of SqlJobStore, on SQLite and PostgreSQL (every test taking `store` or `db_url` runs on both).

The store only ever sees hashes. A hash is unique: adding one that is already stored raises ValueError
(the database's IntegrityError is translated, and chained as __cause__), so callers need no SQLAlchemy import.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from nbrelay.store import NewJob
from nbrelay.store.base import TokenRecord, check_user_name
from nbrelay.store.sql import MIGRATIONS_DIR, SqlJobStore
from nbrelay.store.sql import MIGRATIONS_DIR as _MIGRATIONS

HEAD = ScriptDirectory(str(_MIGRATIONS)).get_current_head()  # the latest migration; later ones keep these tests valid


def h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_add_and_find_round_trip(store: SqlJobStore) -> None:
    before = datetime.now(UTC)
    added = await store.add_token("alice", h("t1"))
    after = datetime.now(UTC)

    assert isinstance(added, TokenRecord)
    assert added.id > 0
    assert (added.name, added.token_hash, added.admin, added.last_used_at) == ("alice", h("t1"), False, None)
    assert before <= added.created_at <= after
    assert added.created_at.utcoffset() == timedelta(0)

    found = await store.find_token(h("t1"))
    assert found == added
    assert found.created_at.tzinfo == UTC

    admin = await store.add_token("root", h("t2"), admin=True)
    assert admin.admin is True
    assert admin.id > added.id
    assert await store.find_token(h("t2")) == admin


async def test_unknown_hash_is_none(store: SqlJobStore) -> None:
    assert await store.find_token(h("nothing")) is None
    await store.add_token("alice", h("t1"))
    assert await store.find_token(h("nothing")) is None
    assert await store.find_token("") is None
    assert await store.find_token("x" * 500) is None


async def test_duplicate_hash_is_refused(store: SqlJobStore) -> None:
    first = await store.add_token("alice", h("same"))
    for name, admin in [("alice", False), ("bob", True)]:
        with pytest.raises(ValueError, match="already stored") as info:
            await store.add_token(name, h("same"), admin=admin)
        assert isinstance(info.value.__cause__, IntegrityError)
    assert await store.list_tokens() == [first]
    # The store is still usable after the failed transaction.
    assert (await store.add_token("bob", h("other"))).name == "bob"


async def test_concurrent_duplicate_has_one_winner(store: SqlJobStore) -> None:
    results = await asyncio.gather(*(store.add_token(f"user{i}", h("raced")) for i in range(4)), return_exceptions=True)
    won = [r for r in results if isinstance(r, TokenRecord)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1
    assert len(lost) == 3 and all(isinstance(e, ValueError) for e in lost)
    assert await store.find_token(h("raced")) == won[0]


async def test_touch_sets_last_used_at(store: SqlJobStore) -> None:
    token = await store.add_token("alice", h("t1"))
    other = await store.add_token("alice", h("t2"))

    before = datetime.now(UTC)
    await store.touch_token(token.id)
    after = datetime.now(UTC)
    touched = await store.find_token(h("t1"))
    assert touched is not None and touched.last_used_at is not None
    assert before <= touched.last_used_at <= after
    assert touched.last_used_at.tzinfo == UTC
    assert touched == TokenRecord(**{**_fields(token), "last_used_at": touched.last_used_at})
    assert await store.find_token(h("t2")) == other  # the other token is untouched

    await store.touch_token(token.id)
    again = await store.find_token(h("t1"))
    assert again is not None and again.last_used_at is not None
    assert again.last_used_at >= touched.last_used_at

    await store.touch_token(999_999)  # unknown id: silently nothing


async def test_list_filters_by_name_oldest_first(store: SqlJobStore) -> None:
    assert await store.list_tokens() == []
    a1 = await store.add_token("alice", h("a1"))
    b1 = await store.add_token("bob", h("b1"), admin=True)
    a2 = await store.add_token("alice", h("a2"))

    assert await store.list_tokens() == [a1, b1, a2]
    assert await store.list_tokens("alice") == [a1, a2]
    assert await store.list_tokens(name="bob") == [b1]
    assert await store.list_tokens("nobody") == []
    assert await store.list_tokens("Alice") == []  # names are case-sensitive


async def test_delete_returns_counts(store: SqlJobStore) -> None:
    a1 = await store.add_token("alice", h("a1"))
    b1 = await store.add_token("bob", h("b1"))
    await store.add_token("alice", h("a2"))

    assert await store.delete_tokens("alice") == 2
    assert await store.list_tokens() == [b1]
    assert await store.find_token(h("a1")) is None
    assert await store.delete_tokens("alice") == 0
    assert await store.delete_tokens("nobody") == 0
    assert await store.delete_tokens("bob") == 1
    assert await store.list_tokens() == []

    # A deleted hash may be stored again, and ids are never reused.
    again = await store.add_token("alice", h("a1"))
    assert again.id > a1.id


@pytest.mark.parametrize(
    "name",
    ["", "a" * 129, "al ice", "alice\n", "ali/ce", "al:ice", "ålice", "alice\x00", "<script>", "名前"],
)
async def test_bad_names_are_refused(store: SqlJobStore, name: str) -> None:
    with pytest.raises(ValueError, match="invalid user name"):
        await store.add_token(name, h("t"))
    assert await store.list_tokens() == []


@pytest.mark.parametrize("name", ["a", "a" * 128, "Alice_01", "first.last@example.org", "a+b-c", "-_.@+"])
async def test_good_names_are_accepted(store: SqlJobStore, name: str) -> None:
    token = await store.add_token(name, h(name))
    assert await store.list_tokens(name) == [token]


@pytest.mark.parametrize("token_hash", ["", "x" * 129])
async def test_bad_hashes_are_refused(store: SqlJobStore, token_hash: str) -> None:
    with pytest.raises(ValueError, match="token hash"):
        await store.add_token("alice", token_hash)
    assert await store.list_tokens() == []


def test_check_user_name_message() -> None:
    assert check_user_name("bob") == "bob"
    with pytest.raises(ValueError, match=r"invalid user name 'bob smith': use 1 to 128 characters"):
        check_user_name("bob smith")
    with pytest.raises(ValueError, match="invalid user name") as info:
        check_user_name("x" * 10_000)
    assert len(str(info.value)) < 200


async def test_tokens_survive_restart_and_migrations_are_idempotent(db_url: str) -> None:
    first = SqlJobStore(db_url)
    await first.start()
    await first.start()
    try:
        token = await first.add_token("alice", h("t1"), admin=True)
    finally:
        await first.close()

    for _ in range(2):
        again = SqlJobStore(db_url)
        await again.start()
        try:
            assert await again.find_token(h("t1")) == token
            assert await _revision(again) == HEAD
        finally:
            await again.close()


async def test_upgrade_from_0001_keeps_jobs(db_url: str) -> None:
    old = SqlJobStore(db_url)
    if old.url.get_backend_name() == "sqlite":
        Path(str(old.url.database)).parent.mkdir(parents=True, exist_ok=True)  # start() would do this
    try:
        async with old.engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0001")
        async with old.engine.connect() as conn:
            assert not await conn.run_sync(lambda c: sa.inspect(c).has_table("tokens"))
    finally:
        await old.close()

    store = SqlJobStore(db_url)
    await store.start()
    try:
        assert await _revision(store) == HEAD
        job = await store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
        token = await store.add_token("alice", h("t1"))
        assert await store.find_token(h("t1")) == token

        # And back down: 0002's downgrade drops only the tokens table.
        async with store.engine.begin() as conn:
            await conn.run_sync(_migrate, "downgrade", "0001")
        async with store.engine.connect() as conn:
            assert not await conn.run_sync(lambda c: sa.inspect(c).has_table("tokens"))
        # Read the row with plain SQL: the current store code selects columns that later migrations add.
        async with store.engine.connect() as conn:
            row = (await conn.execute(sa.text("SELECT id, owner, notebook FROM jobs"))).one()
        assert (row.id, row.owner, row.notebook) == (job.id, "alice", "a.ipynb")
    finally:
        await store.close()


def _fields(token: TokenRecord) -> dict[str, object]:
    return {name: getattr(token, name) for name in TokenRecord.__dataclass_fields__}


def _migrate(connection: Connection, direction: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def _revision(store: SqlJobStore) -> str:
    async with store.engine.connect() as conn:
        return str((await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one())
