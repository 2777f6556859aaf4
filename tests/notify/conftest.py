from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.notify.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


# The job store on SQLite and on PostgreSQL, as the store's own tests have it.
from tests.store.conftest import db_url, store  # noqa: E402, F401
