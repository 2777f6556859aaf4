"""Job persistence: a small interface and one SQL implementation (SQLite by default, PostgreSQL by URL)."""

# The SQL tables first, whichever store module is imported first: schedules.py and notifications.py define theirs
# on sql.py's metadata and sql.py imports them at its end, so an import that began in one of them would find the
# other half made.
import nbrelay.store.sql  # noqa: F401
from nbrelay.store.base import JobStore, NewJob

__all__ = ["JobStore", "NewJob", "open_store"]


def open_store(url: str) -> JobStore:
    """The store for a database URL: sqlite:///path or postgresql://…"""
    from nbrelay.store.sql import SqlJobStore

    return SqlJobStore(url)
