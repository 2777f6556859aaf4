"""What the security tests share: a real server in auth mode token, one per test module."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import NOTEBOOKS
from tests.live import LiveServer


def token_server(tmp_path_factory: pytest.TempPathFactory, label: str, **settings: Any) -> LiveServer:
    """A started in-process server in auth mode token on a fresh copy of tests/notebooks; the caller stops it."""
    tmp = tmp_path_factory.mktemp(label)
    shutil.copytree(NOTEBOOKS, tmp / "workspace")
    return LiveServer(tmp / "workspace", tmp / "data", auth_mode="token", **settings).start()
