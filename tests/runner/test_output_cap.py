"""OutputCap: head and tail of a flood, the note, the job's budget (pure bookkeeping, fed by hand)."""

from __future__ import annotations

from nbrelay.runner.output_cap import OutputCap


def test_small_output_passes_untouched() -> None:
    cap = OutputCap(cell_max_chars=100, job_max_chars=1000)
    cap.new_cell()
    assert cap.admit_stream("stdout", "hello\n") == "hello\n"
    assert cap.admit_output(10)
    assert cap.closing() is None


def test_a_flood_keeps_head_and_tail_and_says_what_was_cut() -> None:
    cap = OutputCap(cell_max_chars=100, job_max_chars=10_000)
    cap.new_cell()
    kept = "".join(cap.admit_stream("stdout", f"{i:04d}\n") for i in range(1000))  # 5,000 characters
    assert kept == "".join(f"{i:04d}\n" for i in range(10))  # the first half of the cell's budget
    name, text = cap.closing() or ("", "")
    assert name == "stdout"
    note, _, tail = text.partition("]\n")
    assert "4,950 characters of output over the limits: 4,900 characters cut, the last 50 characters follow" in note
    assert tail == "".join(f"{i:04d}\n" for i in range(990, 1000))
    assert not cap.admit_output(1)  # the cell is over its budget: rich outputs are dropped and counted
    assert "1 output(s) dropped" in (cap.closing() or ("", ""))[1]


def test_the_job_budget_spans_cells() -> None:
    cap = OutputCap(cell_max_chars=100, job_max_chars=60)
    for cell in range(3):
        cap.new_cell()
        kept = cap.admit_stream("stdout", "x" * 40)
        assert len(kept) == [40, 20, 0][cell]
    assert cap.job_kept == 60
    assert "40 characters of output over the limits: the last 40 characters follow" in (cap.closing() or ("", ""))[1]
