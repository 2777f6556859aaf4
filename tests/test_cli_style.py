"""How the CLI shows what it prints."""

from __future__ import annotations

import pytest

from nbrelay.cli_style import duration


@pytest.mark.parametrize(
    ("taken", "shown"),
    [(None, ""), (0.0, "0 ms"), (0.0404, "40 ms"), (2.54, "2.5 s"), (59.94, "59.9 s"), (187.2, "3 min 07 s")],
)
def test_a_duration_reads_as_people_read_it(taken: float | None, shown: str) -> None:
    """Found from outside: a 40 ms run "succeeded in 0.0 s"."""
    assert duration(taken) == shown
