from __future__ import annotations

from pathlib import Path

import pytest

from tests.steps.support import REPORT


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


@pytest.fixture
def artifacts(tmp_path: Path) -> tuple[Path, Path]:
    """A report and an executed notebook in a data dir outside the workspace."""
    folder = tmp_path / "data" / "reports" / "42"
    folder.mkdir(parents=True)
    report, output = folder / "weekly.html", folder / "weekly.ipynb"
    report.write_text(REPORT)
    output.write_text('{"cells": []}')
    return report, output
