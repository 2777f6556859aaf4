"""Fixtures of the API tests: real in-process servers (tests/live.py) a test starts with its own settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer


@pytest.fixture
def live(tmp_path: Path, workspace: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the test's workspace and data folder, each with the settings given; all stop after."""
    started: list[LiveServer] = []

    def make(**settings: Any) -> LiveServer:
        server = LiveServer(workspace, tmp_path / "data", **settings).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
