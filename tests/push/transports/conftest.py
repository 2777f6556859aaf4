from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer


@pytest.fixture
def live(tmp_path: Path, workspace: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start LiveServers with settings overrides; all are stopped at the end of the test."""
    started: list[LiveServer] = []

    def make(port: int | None = None, **settings: Any) -> LiveServer:
        server = LiveServer(workspace, tmp_path / "data", port=port, **settings).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
