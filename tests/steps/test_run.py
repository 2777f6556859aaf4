"""Running post-run steps on real files in tmp_path (steps.run, globs, writing), and what clients see of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nbrelay.files import Areas
from nbrelay.models import JobState
from nbrelay.steps import validate_steps, writing
from tests.steps.support import REPORT, leftovers, make_job, run


# copying -------------------------------------------------------------------------------------------------------------
def test_copy_report_to_a_templated_path(ws: Path, artifacts: tuple[Path, Path]) -> None:
    results = run(
        ws, [{"action": "copy", "source": "report", "to": "publish/{notebook}-{date}.html"}], artifacts=artifacts
    )
    assert results == [
        {
            "step": 0,
            "action": "copy",
            "source": "report",
            "to": "publish/{notebook}-{date}.html",
            "status": "done",
            "files": ["publish/weekly-2026-03-04.html"],
        }
    ]
    assert (ws / "publish" / "weekly-2026-03-04.html").read_text() == REPORT
    assert artifacts[0].read_text() == REPORT  # a copy: the report history keeps its own
    assert leftovers(ws) == []


def test_copy_to_a_folder_keeps_the_name(ws: Path, artifacts: tuple[Path, Path]) -> None:
    results = run(
        ws, [{"action": "copy", "source": "notebook", "to": "{notebook_dir}/runs/{job}/"}], artifacts=artifacts
    )
    assert results[0]["files"] == ["analysis/runs/42/weekly.ipynb"]
    assert (ws / "analysis" / "runs" / "42" / "weekly.ipynb").read_text() == '{"cells": []}'


def test_parameters_with_slashes_make_no_folders(ws: Path, artifacts: tuple[Path, Path]) -> None:
    job = make_job(parameters={"region": "eu/west", "escape": "../../x"})
    step = {"action": "copy", "source": "report", "to": "publish/{region}-{escape}.html"}
    results = run(ws, [step], job=job, artifacts=artifacts)
    assert results[0]["status"] == "done", results
    assert results[0]["files"] == ["publish/eu_west-.._.._x.html"]
    assert sorted(p.name for p in (ws / "publish").iterdir()) == ["eu_west-.._.._x.html"]


def test_existing_destination_fails_without_overwrite(ws: Path, artifacts: tuple[Path, Path]) -> None:
    (ws / "publish").mkdir()
    (ws / "publish" / "weekly.html").write_text("old")
    results = run(ws, [{"action": "copy", "source": "report", "to": "publish/{notebook}.html"}], artifacts=artifacts)
    assert results[0]["status"] == "failed"
    assert results[0]["files"] == []
    assert "publish/weekly.html exists" in results[0]["error"]
    assert "overwrite" in results[0]["error"]
    assert (ws / "publish" / "weekly.html").read_text() == "old"
    assert leftovers(ws) == []


def test_overwrite_replaces_the_destination(ws: Path, artifacts: tuple[Path, Path]) -> None:
    (ws / "publish").mkdir()
    (ws / "publish" / "weekly.html").write_text("old")
    step = {"action": "copy", "source": "report", "to": "publish/{notebook}.html", "overwrite": True}
    results = run(ws, [step], artifacts=artifacts)
    assert results[0]["status"] == "done"
    assert (ws / "publish" / "weekly.html").read_text() == REPORT
    assert leftovers(ws) == []


def test_a_folder_is_never_overwritten(ws: Path, artifacts: tuple[Path, Path]) -> None:
    (ws / "publish" / "weekly.html").mkdir(parents=True)
    step = {"action": "copy", "source": "report", "to": "publish/weekly.html", "overwrite": True}
    results = run(ws, [step], artifacts=artifacts)
    assert results[0]["status"] == "failed"
    assert "is a folder" in results[0]["error"]
    assert (ws / "publish" / "weekly.html").is_dir()


def test_destination_escaping_through_a_parameter_is_refused(
    tmp_path: Path, ws: Path, artifacts: tuple[Path, Path]
) -> None:
    job = make_job(parameters={"where": ".."})
    step = {"action": "copy", "source": "report", "to": "{where}/{where}/x.html"}
    results = run(ws, [step], job=job, artifacts=artifacts)
    assert results[0]["status"] == "failed"
    assert "destination refused" in results[0]["error"]
    assert "'..' is not allowed" in results[0]["error"]
    assert not (tmp_path.parent / "x.html").exists()
    assert not (tmp_path / "x.html").exists()
    assert sorted(p.name for p in ws.rglob("*")) == []
    assert leftovers(tmp_path) == []


def test_destination_through_a_symlink_out_of_the_workspace_is_refused(
    tmp_path: Path, ws: Path, artifacts: tuple[Path, Path]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "publish").symlink_to(outside, target_is_directory=True)
    results = run(ws, [{"action": "copy", "source": "report", "to": "publish/r.html"}], artifacts=artifacts)
    assert results[0]["status"] == "failed"
    assert "leads outside the workspace" in results[0]["error"]
    assert list(outside.iterdir()) == []


def test_a_copy_failing_midway_leaves_no_file_and_no_temp(
    ws: Path, artifacts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_copy(source: Any, target: Any, length: int = 0) -> None:
        target.write(b"half of it")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing.shutil, "copyfileobj", broken_copy)
    results = run(ws, [{"action": "copy", "source": "report", "to": "publish/r.html"}], artifacts=artifacts)
    assert results[0]["status"] == "failed"
    assert "No space left on device" in results[0]["error"]
    assert not (ws / "publish" / "r.html").exists()
    assert leftovers(ws) == []
    assert list((ws / "publish").iterdir()) == []


def test_a_failing_step_does_not_stop_the_next(ws: Path, artifacts: tuple[Path, Path]) -> None:
    (ws / "taken.html").write_text("old")
    results = run(
        ws,
        [
            {"action": "copy", "source": "report", "to": "taken.html"},
            {"action": "copy", "source": "report", "to": "free.html"},
        ],
        artifacts=artifacts,
    )
    assert [r["status"] for r in results] == ["failed", "done"]
    assert (ws / "free.html").read_text() == REPORT


def test_no_report_skips_the_step(ws: Path) -> None:
    job = make_job(JobState.FAILED)
    results = run(ws, [{"action": "copy", "source": "report", "to": "r.html", "when": "always"}], job=job)
    assert results[0]["status"] == "skipped"
    assert results[0]["reason"] == "the job has no report"


# when ----------------------------------------------------------------------------------------------------------------
def test_when_success_is_skipped_and_always_runs_for_a_failed_job(ws: Path, artifacts: tuple[Path, Path]) -> None:
    (ws / "scratch.csv").write_text("x")
    job = make_job(JobState.FAILED)
    results = run(
        ws,
        [
            {"action": "copy", "source": "report", "to": "ok/{notebook}.html"},
            {"action": "copy", "source": "report", "to": "always/{notebook}-{state}.html", "when": "always"},
            {"action": "delete", "source": "*.csv", "when": "always"},
        ],
        job=job,
        artifacts=artifacts,
    )
    assert [r["status"] for r in results] == ["skipped", "done", "done"]
    assert results[0]["reason"] == "the job did not succeed"
    assert results[0]["files"] == []
    assert not (ws / "ok").exists()
    assert (ws / "always" / "weekly-failed.html").read_text() == REPORT
    assert results[2]["files"] == ["scratch.csv"]
    assert not (ws / "scratch.csv").exists()


# globs ---------------------------------------------------------------------------------------------------------------
def test_glob_delete_never_reaches_through_a_symlinked_folder(tmp_path: Path, ws: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.csv"
    canary.write_text("keep me")
    (ws / "link").symlink_to(outside, target_is_directory=True)
    (ws / "data" / "deep").mkdir(parents=True)
    (ws / "top.csv").write_text("1")
    (ws / "data" / "a.csv").write_text("2")
    (ws / "data" / "deep" / "b.csv").write_text("3")
    (ws / "data" / "keep.txt").write_text("4")

    results = run(
        ws,
        [
            {"action": "delete", "source": "**/*.csv"},
            {"action": "delete", "source": "*/*.csv"},
            {"action": "delete", "source": "link/*.csv"},
            {"action": "delete", "source": "link/**"},
        ],
    )
    assert results[0]["status"] == "done", results
    assert results[0]["files"] == ["data/a.csv", "data/deep/b.csv", "top.csv"]
    assert [r["files"] for r in results[1:]] == [[], [], []]
    assert canary.read_text() == "keep me"
    assert (ws / "data" / "keep.txt").exists()
    assert (ws / "link").is_symlink()  # a folder (even a symlinked one) is never deleted


def test_deleting_a_symlink_removes_the_link_only(tmp_path: Path, ws: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target_out = outside / "target.csv"
    target_out.write_text("outside")
    target_in = ws / "kept" / "target.dat"
    target_in.parent.mkdir()
    target_in.write_text("inside")
    (ws / "out.csv").symlink_to(target_out)
    (ws / "in.csv").symlink_to(target_in)
    (ws / "dangling.csv").symlink_to(ws / "nothing-here")

    results = run(ws, [{"action": "delete", "source": "*.csv"}])
    assert results[0]["files"] == ["dangling.csv", "in.csv", "out.csv"]
    assert not any(p.is_symlink() for p in ws.iterdir())
    assert target_out.read_text() == "outside"
    assert target_in.read_text() == "inside"


def test_folders_are_not_deleted(ws: Path) -> None:
    (ws / "old.tmp").mkdir()
    (ws / "old.tmp" / "x.txt").write_text("x")
    results = run(ws, [{"action": "delete", "source": "*.tmp"}])
    assert results[0] == {"step": 0, "action": "delete", "source": "*.tmp", "status": "done", "files": []}
    assert (ws / "old.tmp" / "x.txt").exists()


def test_trailing_double_star_is_every_file_below(ws: Path) -> None:
    (ws / "out" / "a" / "b").mkdir(parents=True)
    (ws / "out" / "1.txt").write_text("1")
    (ws / "out" / "a" / "b" / "2.txt").write_text("2")
    (ws / "other.txt").write_text("3")
    results = run(ws, [{"action": "delete", "source": "out/**"}])
    assert results[0]["files"] == ["out/1.txt", "out/a/b/2.txt"]
    assert (ws / "out" / "a" / "b").is_dir()
    assert (ws / "other.txt").exists()


def test_glob_copy_into_a_folder_and_move(ws: Path) -> None:
    (ws / "scratch").mkdir()
    (ws / "scratch" / "a.csv").write_text("a")
    (ws / "scratch" / "b.csv").write_text("b")
    results = run(
        ws,
        [
            {"action": "copy", "source": "scratch/*.csv", "to": "backup/{date}/"},
            {"action": "move", "source": "scratch/a.csv", "to": "archive/{job}-a.csv"},
        ],
    )
    assert [r["status"] for r in results] == ["done", "done"], results
    assert results[0]["files"] == ["backup/2026-03-04/a.csv", "backup/2026-03-04/b.csv"]
    assert results[1]["files"] == ["archive/42-a.csv"]
    assert (ws / "backup" / "2026-03-04" / "b.csv").read_text() == "b"
    assert (ws / "archive" / "42-a.csv").read_text() == "a"
    assert not (ws / "scratch" / "a.csv").exists()
    assert (ws / "scratch" / "b.csv").exists()
    assert leftovers(ws) == []


def test_move_refuses_existing_destinations_and_symlinks(tmp_path: Path, ws: Path) -> None:
    (ws / "a.csv").write_text("new")
    (ws / "dest").mkdir()
    (ws / "dest" / "a.csv").write_text("old")
    (ws / "l.csv").symlink_to(ws / "a.csv")
    results = run(ws, [{"action": "move", "source": "*.csv", "to": "dest/"}])
    assert results[0]["status"] == "failed"
    assert "a.csv: destination dest/a.csv exists" in results[0]["error"]
    assert "l.csv: is a symlink" in results[0]["error"]
    assert (ws / "a.csv").read_text() == "new"
    assert (ws / "dest" / "a.csv").read_text() == "old"


def test_two_matches_never_go_to_one_destination(ws: Path) -> None:
    for folder in ("x", "y"):
        (ws / folder).mkdir()
        (ws / folder / "same.csv").write_text(folder)
    results = run(ws, [{"action": "copy", "source": "*/same.csv", "to": "all/", "overwrite": True}])
    assert results[0]["status"] == "failed"
    assert results[0]["files"] == ["all/same.csv"]
    assert "y/same.csv: another file of this step already went to all/same.csv" in results[0]["error"]
    assert (ws / "all" / "same.csv").read_text() == "x"


def test_copy_of_a_symlink_to_outside_is_refused(tmp_path: Path, ws: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (ws / "s.txt").symlink_to(secret)
    results = run(ws, [{"action": "copy", "source": "*.txt", "to": "pub/"}])
    assert results[0]["status"] == "failed"
    assert "leads outside the workspace" in results[0]["error"]
    assert not (ws / "pub" / "s.txt").exists()


def test_areas_confine_globs_and_destinations(ws: Path, artifacts: tuple[Path, Path]) -> None:
    for rel in ("users/alice/a.tmp", "users/bob/b.tmp", "shared/s.tmp", "root.tmp"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text("x")
    areas = Areas(["users/alice", "shared"])
    results = run(
        ws,
        [
            {"action": "delete", "source": "**/*.tmp"},
            {"action": "copy", "source": "report", "to": "users/bob/{notebook}.html"},
            {"action": "copy", "source": "report", "to": "users/alice/{notebook}.html"},
        ],
        artifacts=artifacts,
        areas=areas,
    )
    assert results[0] == {
        "step": 0,
        "action": "delete",
        "source": "**/*.tmp",
        "status": "done",
        "files": ["shared/s.tmp", "users/alice/a.tmp"],
    }
    assert (ws / "users/bob/b.tmp").exists()
    assert (ws / "root.tmp").exists()
    assert results[1]["status"] == "failed"
    assert "not in a folder the job's owner may change" in results[1]["error"]
    assert results[2]["status"] == "done"


def test_the_workspace_is_untouched_by_a_run_without_steps(ws: Path) -> None:
    (ws / "a.csv").write_text("a")
    assert run(ws, []) == []
    assert os.listdir(ws) == ["a.csv"]


# what clients see ----------------------------------------------------------------------------------------------------
def test_terminal_event_and_job_json_show_the_steps() -> None:
    from nbrelay.api.schemas import job_json
    from nbrelay.jobs import job_event

    checked = validate_steps([{"action": "delete", "source": "*.tmp"}])
    results = [{"step": 0, "action": "delete", "source": "*.tmp", "status": "done", "files": ["a.tmp"]}]
    job = make_job(steps=checked, step_results=results)
    event = job_event(job)
    assert event.type == "job.succeeded"
    assert event.data["steps"] == results
    shown = job_json(job)
    assert shown["steps"] == checked
    assert shown["step_results"] == results
    queued = make_job(JobState.QUEUED, steps=checked, finished_at=None)
    assert "steps" not in job_event(queued).data
    assert job_json(queued)["step_results"] is None


async def test_the_store_keeps_steps_and_results(tmp_path: Path) -> None:
    from nbrelay.models import transition
    from nbrelay.store.base import NewJob
    from nbrelay.store.sql import SqlJobStore

    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.start()
    try:
        checked = validate_steps([{"action": "copy", "source": "report", "to": "p/{job}.html"}])
        job = await store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3", steps=checked))
        assert job.steps == checked
        assert job.step_results is None
        assert await store.get_job(job.id) == job
        running = transition(job, JobState.RUNNING)
        assert await store.save(running, expect_state=JobState.QUEUED)
        results = [{"step": 0, "action": "copy", "source": "report", "status": "failed", "files": [], "error": "x"}]
        done = transition(running, JobState.SUCCEEDED, step_results=results)
        assert await store.save(done, expect_state=JobState.RUNNING)
        assert await store.get_job(job.id) == done
        plain = await store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
        assert (await store.get_job(plain.id)) == plain
        assert plain.steps == []
    finally:
        await store.close()
