"""The write-ahead check: whether the appends a flush planned reached their files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zlogcollect.writeahead import batch_runs, records_written, writes_complete


def test_every_write_complete_none_of_them_or_some(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"old\nnew line\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.log").write_bytes(b"x\n")
    done = [["a.log", 4, 9], ["sub/b.log", 0, 2]]
    assert writes_complete(str(tmp_path), done) is True
    assert writes_complete(str(tmp_path), [["a.log", 13, 5], ["sub/b.log", 2, 7]]) is False
    assert writes_complete(str(tmp_path), [["a.log", 4, 9], ["sub/b.log", 2, 7]]) is None  # one of two
    assert writes_complete(str(tmp_path), [["a.log", 2, 9]]) is None  # neither before nor after: rotated?


def test_a_file_nobody_created_is_one_nothing_reached(tmp_path: Path) -> None:
    assert writes_complete(str(tmp_path), [["new.log", 0, 10]]) is False
    assert writes_complete(str(tmp_path), [["gone.log", 100, 10]]) is None  # removed since


def test_a_link_is_never_taken_for_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"0123456789")
    os.symlink(target, tmp_path / "a.log")
    assert writes_complete(str(tmp_path), [["a.log", 0, 10]]) is None


@pytest.mark.parametrize(
    "plan",
    [
        None,
        [],
        "a.log",
        [["a.log", 0]],
        [["/etc/passwd", 0, 10]],
        [["../a.log", 0, 10]],
        [["a.log", -1, 10]],
        [["a.log", 0, 0]],
        [["a.log", "0", 10]],
        [[1, 0, 10]],
    ],
)
def test_anything_but_a_plan_is_no_verdict(tmp_path: Path, plan: object) -> None:
    (tmp_path / "a.log").write_bytes(b"0123456789")
    assert writes_complete(str(tmp_path), plan) is None


def test_runs_group_consecutive_seqs_of_one_publisher_with_as_many_lines() -> None:
    marks = [("p", 1), ("p", 2), ("p", 3), ("q", 9), None, None, ("p", 5), ("p", 6), ("p", 7)]
    assert batch_runs(marks, None) == [["p", 1, 3, 1], ["q", 9, 1, 1], [None, None, 2, 1], ["p", 5, 3, 1]]
    newlines = [1, 1, 1, 1, 1, 1, 1, 3, 1]  # seq 6 is a traceback of three lines
    assert batch_runs(marks, newlines)[-3:] == [["p", 5, 1, 1], ["p", 6, 1, 3], ["p", 7, 1, 1]]
    assert batch_runs([], None) == []


def test_a_cut_batch_counts_only_records_whole_in_every_file(tmp_path: Path) -> None:
    """p:1-3 in a.log (cut in p:3), p:2 also in errors.log (not written): only p:1 is written."""
    (tmp_path / "a.log").write_bytes(b"before\none\ntwo\nthr")
    (tmp_path / "errors.log").write_bytes(b"")
    plan = [
        ["a.log", 7, 14, [["p", 1, 3, 1]]],
        ["errors.log", 0, 4, [["p", 2, 1, 1]]],
    ]
    assert writes_complete(str(tmp_path), plan) is None
    assert records_written(str(tmp_path), plan) == {"p": [1]}
    (tmp_path / "errors.log").write_bytes(b"two\n")
    assert records_written(str(tmp_path), plan) == {"p": [1, 2]}


def test_a_multi_line_record_counts_once_all_its_lines_are_there(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"one\ntrace 1\ntrace 2\n")  # two of the traceback's three lines
    plan = [["a.log", 0, 26, [["p", 1, 1, 1], ["p", 2, 1, 3], [None, None, 1, 1]]]]
    assert records_written(str(tmp_path), plan) == {"p": [1]}


@pytest.mark.parametrize(
    "plan",
    [
        [["a.log", 0, 10]],  # no runs
        [["a.log", 0, 10, "runs"]],
        [["a.log", 0, 10, [["p", 1, 0, 1]]]],
        [["a.log", 0, 10, [["p", -1, 1, 1]]]],
        [["a.log", 0, 10, [[7, 1, 1, 1]]]],
        [["a.log", 0, 3, [["p", 1, 1, 1]]]],  # the file is past the batch's end: changed since
    ],
)
def test_a_cut_batch_without_usable_runs_tells_nothing(tmp_path: Path, plan: list[object]) -> None:
    (tmp_path / "a.log").write_bytes(b"01234\n")
    assert records_written(str(tmp_path), plan) is None


def test_a_publisher_whose_seqs_go_back_in_a_file_is_not_told_apart(tmp_path: Path) -> None:
    """A sender that reuses its pub restarted inside the batch (0-5, then 0-2 from the new process):
    the whole lines cannot say which process's 3-5 they are, so nothing of that publisher is claimed."""
    (tmp_path / "a.log").write_bytes(b"0\n1\n2\n3\n4\n5\n0\n1")  # cut in the new process's seq 1
    plan = [["a.log", 0, 18, [["p", 0, 6, 1], ["p", 0, 3, 1], ["q", 7, 1, 1]]]]
    assert records_written(str(tmp_path), plan) == {}
    (tmp_path / "a.log").write_bytes(b"0\n1\n2\n3\n4\n5\n0\n1\n2\nq")
    assert (
        records_written(str(tmp_path), [["a.log", 0, 20, [["p", 0, 6, 1], ["p", 0, 3, 1], ["q", 7, 1, 1]]]])
        == {}
    )
