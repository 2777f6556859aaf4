"""Job persistence: a small interface and one SQL implementation (SQLite by default, PostgreSQL by URL)."""

from nbrelay.store.base import JobStore, NewJob

__all__ = ["JobStore", "NewJob", "open_store"]


def open_store(url: str) -> JobStore:
    """The store for a database URL: sqlite:///path or postgresql://…"""
    from nbrelay.store.sql import SqlJobStore

    return SqlJobStore(url)
