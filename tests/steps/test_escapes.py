"""The path-escape corpus of the contents API, run against post-run steps: as a copy or move destination and as
a glob to copy, move or delete. Each is refused (422 at submit, or a failed step) and nothing outside the
workspace changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbrelay.errors import Unprocessable
from nbrelay.files import Workspace
from nbrelay.models import Job, JobState
from nbrelay.steps import run_steps, validate_steps
from tests.api.test_path_escapes import attempts, snapshot


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "workspace" / "scratch").mkdir(parents=True)
    (tmp_path / "workspace" / "scratch" / "a.tmp").write_text("scratch")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "canary.txt").write_text("do not touch")
    (tmp_path / "outside" / "x.txt").write_text("do not touch either")
    os.symlink(tmp_path / "outside", tmp_path / "workspace" / "out_link")
    os.symlink(tmp_path / "outside" / "canary.txt", tmp_path / "workspace" / "file_link")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "report.html").write_text("<html>report</html>")
    return tmp_path


def job() -> Job:
    return Job(id=1, owner="local", notebook="n.ipynb", kernel_name="python3", state=JobState.SUCCEEDED)


STEP_SHAPES = {
    "copy-report-to": lambda p: {"action": "copy", "source": "report", "to": p},
    "copy-glob-from": lambda p: {"action": "copy", "source": p, "to": "published/"},
    "move-glob-from": lambda p: {"action": "move", "source": p, "to": "published/"},
    "move-glob-to": lambda p: {"action": "move", "source": "scratch/*.tmp", "to": p},
    "delete-glob": lambda p: {"action": "delete", "source": p, "when": "always"},
}


@pytest.mark.parametrize("shape", sorted(STEP_SHAPES))
@pytest.mark.parametrize("target", ["outside/x.txt", "outside/canary.txt"])
def test_escapes_in_steps_are_refused_and_nothing_outside_changes(tree: Path, shape: str, target: str) -> None:
    outside_before = snapshot(tree, skip={tree / "workspace", tree / "data"})
    cases = attempts(tree, target)
    assert len(cases) >= 30
    outcomes: dict[str, str] = {}
    for case in cases:
        step = STEP_SHAPES[shape](case.path)
        try:
            steps = validate_steps([step])
        except Unprocessable:
            outcomes[case.id] = "refused at submit"
            continue
        (result,) = run_steps(
            steps,
            job=job(),
            workspace=Workspace(tree / "workspace"),
            report_path=tree / "data" / "report.html",
            output_path=None,
            succeeded=True,
        )
        # A glob that matches nothing inside the workspace is fine; anything written must be inside it.
        assert result["status"] in ("failed", "done", "skipped"), result
        root = (tree / "workspace").resolve()
        for written in result["files"]:  # e.g. a folder literally named "..;" is fine: it is inside
            assert root in (root / written).resolve().parents, (case.id, result)
        outcomes[case.id] = result["status"]
    assert snapshot(tree, skip={tree / "workspace", tree / "data"}) == outside_before, outcomes
    assert (tree / "outside" / "canary.txt").read_text() == "do not touch"
