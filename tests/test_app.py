"""The app's start-up helpers."""

from __future__ import annotations

from pathlib import Path

from nbrelay.app import seed_workspace


def test_examples_go_where_every_user_sees_them_and_never_into_a_workspace_in_use(tmp_path: Path) -> None:
    """Found from outside: in auth mode token the examples sat at the workspace's top, which only admins see."""
    assert seed_workspace(tmp_path / "ws", into="shared")
    assert (tmp_path / "ws" / "shared" / "tour.ipynb").is_file() and not (tmp_path / "ws" / "tour.ipynb").exists()
    assert seed_workspace(tmp_path / "solo")  # auth mode none: the one user sees the top
    assert (tmp_path / "solo" / "tour.ipynb").is_file()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.ipynb").write_text("{}")
    assert not seed_workspace(tmp_path / "used")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["mine.ipynb"]
