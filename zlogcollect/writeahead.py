"""Write-ahead entries for the files: which appends a flush is about to make, and what of them landed.

Pure but for reading the files back (``os.lstat``, one read of a cut batch).
The collector's journal and the writer's id journal record a batch's outcome
right *after* the file sink wrote it; a kill between those system calls used to
leave the batch on disk but unrecorded, so a replay or a redelivery wrote it
twice. Before writing, the file sink announces its plan: each file's size
before and the bytes it adds, and (the collector) which records the lines are,
as runs of sequence numbers. The next start compares the files with the plan:
all written (:func:`writes_complete` is True), none (False), or, for a write
the kill cut short, exactly which records' lines are whole in every file they
went to (:func:`records_written`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

__all__ = ["Mark", "PlannedWrite", "Run", "batch_runs", "records_written", "writes_complete"]

Mark = tuple[object, object] | None
"""The record a line is: its publisher and sequence number (a str and an int), or None, or
anything else for a record without them."""

Run = list[object]
"""``[pub, first seq, records, newlines each]``: consecutive records of one publisher with
consecutive seqs and the same number of lines (``pub`` and ``first`` None: records without)."""

PlannedWrite = tuple[str, int, int] | tuple[str, int, int, list[Run]]
"""One file a flush is about to append to: its path below the sink's directory, its size
before the write, the bytes the write adds, and (optionally) the runs its lines are."""

_READ_LIMIT = 64 * 1024 * 1024
"""A cut batch is read back only up to this size (a batch is at most a few MiB)."""


def batch_runs(marks: Sequence[Mark], newlines: Sequence[int] | None) -> list[Run]:
    """The runs of a batch's lines: *marks* in order, *newlines* per line (None: one each)."""
    runs: list[Run] = []
    pub: str | None = None
    first: int | None = None
    count = 0
    lines = 1
    expected: int | None = None
    for index, mark in enumerate(marks):
        nl = 1 if newlines is None else newlines[index]
        name, seq = (None, None) if mark is None else mark
        if name.__class__ is not str or seq.__class__ is not int:
            name = seq = None
        if count and name == pub and nl == lines and seq == expected:
            count += 1
            expected = None if seq is None else seq + 1
            continue
        if count:
            runs.append([pub, first, count, lines])
        pub, first, count, lines = name, seq, 1, nl
        expected = None if seq is None else seq + 1
    if count:
        runs.append([pub, first, count, lines])
    return runs


def _entry(entry: object) -> tuple[str, int, int, object] | None:
    """A plan entry checked: path (relative, no ``..``), size before, bytes added, runs or None."""
    if not (isinstance(entry, (list, tuple)) and len(entry) in (3, 4)):
        return None
    path, before, added = entry[0], entry[1], entry[2]
    if not (
        isinstance(path, str)
        and path
        and not os.path.isabs(path)
        and ".." not in path.split("/")
        and before.__class__ is int
        and added.__class__ is int
        and before >= 0
        and added > 0
    ):
        return None
    return path, before, added, entry[3] if len(entry) == 4 else None


def _progress(directory: str, path: str, before: int, added: int) -> int | None:
    """Bytes of the batch the file holds (0 to *added*), or None if its size says neither."""
    try:
        info = os.lstat(os.path.join(directory, path))
    except OSError:
        return 0 if before == 0 else None  # never created is nothing reached; removed since is unknown
    if not stat.S_ISREG(info.st_mode) or not before <= info.st_size <= before + added:
        return None
    return info.st_size - before


def writes_complete(directory: str, plan: object) -> bool | None:
    """After a restart, whether the writes of *plan* (a list of :data:`PlannedWrite`, as read
    back from a journal) reached their files: True if each file is exactly its size before plus
    its bytes, False if each is still its size before, None otherwise (some did, a write was cut
    short, a file was rotated or removed since, or *plan* is not such a list). Never takes a link
    at the file's own name for the file (the sink never writes through one)."""
    measured = _measured(directory, plan)
    if measured is None:
        return None
    done = untouched = 0
    for _path, _before, added, _runs, progress in measured:
        if progress == added:
            done += 1
        elif progress == 0:
            untouched += 1
        else:
            return None
    if done == len(measured):
        return True
    return False if untouched == len(measured) else None


def _measured(directory: str, plan: object) -> list[tuple[str, int, int, object, int | None]] | None:
    """Each entry of *plan* checked, with the bytes of its batch its file holds (:func:`_progress`);
    None if *plan* is not a non-empty list of entries."""
    if not isinstance(plan, list) or not plan:
        return None
    measured = []
    for raw in plan:
        entry = _entry(raw)
        if entry is None:
            return None
        path, before, added, runs = entry
        measured.append((path, before, added, runs, _progress(directory, path, before, added)))
    return measured


def records_written(directory: str, plan: object) -> dict[str, list[int]] | None:
    """For a batch the files show partly written: per publisher, the seqs whose lines are whole in
    every file the batch sent them to. None if that cannot be told (a file in neither state, an
    entry without runs, a plan of the wrong shape): then the batch counts as not written."""
    measured = _measured(directory, plan)
    if measured is None:
        return None
    written: dict[str, set[int]] = {}
    missing: dict[str, set[int]] = {}
    ambiguous: set[str] = set()
    for path, before, added, runs, progress in measured:
        if progress is None:
            return None
        if not isinstance(runs, list):
            if progress == added:
                continue  # every record it had is whole there: it rules nothing out
            return None
        if progress == added:
            whole: int | None = None  # every line
        elif progress == 0:
            whole = 0
        else:
            whole = _whole_lines(directory, path, before, progress)
            if whole is None:
                return None
        if not _split(runs, whole, written, missing, ambiguous):
            return None
    return {
        pub: sorted(seqs - missing.get(pub, set()))
        for pub, seqs in written.items()
        if pub not in ambiguous and seqs - missing.get(pub, set())
    }


def _whole_lines(directory: str, path: str, before: int, progress: int) -> int | None:
    """The newlines in the first *progress* bytes of the batch (its whole lines), or None."""
    if progress > _READ_LIMIT:
        return None
    try:
        fd = os.open(os.path.join(directory, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, progress, before)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.count(b"\n") if len(data) == progress else None


def _split(
    runs: list[object],
    whole: int | None,
    written: dict[str, set[int]],
    missing: dict[str, set[int]],
    ambiguous: set[str],
) -> bool:
    """Add each run's records to *written* or *missing* by the file's *whole* lines of the batch
    (None: all of them); False if a run is not of the right shape. A publisher whose seqs go
    back within the file goes to *ambiguous*: a restart inside the batch (a new process under
    the same ``pub``, counting again) or a replay filling a gap; its seqs are not told apart."""
    consumed = 0
    top: dict[str, int] = {}
    for run in runs:
        if not (isinstance(run, list) and len(run) == 4):
            return False
        pub, first, count, lines = run
        if not (count.__class__ is int and lines.__class__ is int and count > 0 and lines > 0):
            return False
        if pub is None:
            consumed += count * lines
            continue
        if not (isinstance(pub, str) and first.__class__ is int and first >= 0):
            return False
        if first <= top.get(pub, -1):
            ambiguous.add(pub)
        top[pub] = max(top.get(pub, -1), first + count - 1)
        done = count if whole is None else max(0, min(count, (whole - consumed) // lines))
        consumed += count * lines
        if done:
            written.setdefault(pub, set()).update(range(first, first + done))
        if done < count:
            missing.setdefault(pub, set()).update(range(first + done, first + count))
    return True
