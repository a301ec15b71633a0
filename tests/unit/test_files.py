"""The file sink: batching, the stdlib's rotation names, backups, reopen, and disk errors."""

from __future__ import annotations

import errno
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import zlogcollect.sinks.rotating as rotating_module
from zlogcollect.formatting import text_formatter
from zlogcollect.routing import Router, default_routes, parse_route
from zlogcollect.sinks.files import FileQueue, FileSink, Rotation
from zlogcollect.sinks.rotating import RotatingFile
from zlogcollect.stats import Stats
from zlogcollect.wire import Record
from zlogcollect.writeahead import writes_complete


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sink(directory: Path, rotation: Rotation | None = None, **kwargs: Any) -> tuple[FileSink, Stats]:
    stats = Stats()
    files = FileSink(
        str(directory),
        Router(default_routes()),
        text_formatter("%(message)s"),
        rotation or Rotation(),
        stats,
        **kwargs,
    )
    return files, stats


class FullDisk:
    """Stands in for ``os.write`` on a disk with *room* bytes left: short writes, then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data: bytes | memoryview) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, bytes(data[: self.room]))
        self.room -= n
        return n


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    """A disk that is full until the test gives it room (``disk.room = N``)."""
    full = FullDisk(0)
    monkeypatch.setattr(rotating_module, "_os_write", full)
    return full


def rec(source: str, message: str, level: str = "INFO", levelno: int = 20) -> Record:
    return Record(source, level, levelno, "", message, 0.0)


def test_lines_wait_for_flush_then_land_together(tmp_path: Path) -> None:
    """Writes are batched: nothing reaches the file until flush, then every line in order."""
    files, stats = sink(tmp_path)
    for i in range(3):
        files.write(rec("a", f"m{i}"))
    files.write(rec("a", "bad", "ERROR", 40))
    assert not (tmp_path / "a.log").exists()
    assert files.pending_lines == 5
    files.flush()
    assert (tmp_path / "a.log").read_text() == "m0\nm1\nm2\nbad\n"
    assert (tmp_path / "errors.log").read_text() == "bad\n"
    assert stats.written == {"a.log": 4, "errors.log": 1}
    files.close()


def test_a_large_batch_flushes_early(tmp_path: Path) -> None:
    """Once a batch passes batch_chars it is written without waiting for the timer."""
    files, _ = sink(tmp_path, batch_chars=100)
    for i in range(20):
        files.write(rec("a", f"line {i:04d}"))
    assert (tmp_path / "a.log").exists()
    files.close()
    assert len((tmp_path / "a.log").read_text().splitlines()) == 20


def test_rotation_names_match_the_stdlib_handler(tmp_path: Path) -> None:
    """A rollover produces exactly the name TimedRotatingFileHandler gives for the same schedule."""
    ours_dir, stdlib_dir = tmp_path / "ours", tmp_path / "stdlib"
    ours_dir.mkdir()
    stdlib_dir.mkdir()
    for when in ("S", "M", "H", "D", "midnight", "W2"):
        mine = RotatingFile(str(ours_dir / f"{when}.log"), Rotation(when=when), None)
        theirs = logging.handlers.TimedRotatingFileHandler(
            str(stdlib_dir / f"{when}.log"), when=when, delay=True
        )
        mine.rolloverAt = theirs.rolloverAt = int(time.time()) + 30 * 86400
        mine.write_batch("x\n", 0.0)
        theirs.emit(logging.makeLogRecord({"msg": "x"}))
        mine.write_batch("y\n", 1e12)  # far past rolloverAt: rotate now
        theirs.doRollover()
        mine.close()
        theirs.close()
    rotated = sorted(p.name for p in ours_dir.iterdir() if p.name.count(".") > 1)
    assert len(rotated) == 6
    assert rotated == sorted(p.name for p in stdlib_dir.iterdir() if p.name.count(".") > 1)
    assert any(re.fullmatch(r"S\.log\.\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", p.name) for p in ours_dir.iterdir())


def test_backups_of_dotted_names_are_kept_apart(tmp_path: Path) -> None:
    """Pruning app.log's backups never touches app.web.log's (the stdlib does, once a namer is set)."""
    for name in (
        "app.log.2026-01-01.gz",
        "app.log.2026-01-02.gz",
        "app.log.2026-01-03",
        "app.web.log.2026-01-01.gz",
    ):
        (tmp_path / name).write_text("")
    handle = RotatingFile(str(tmp_path / "app.log"), Rotation(when="D", backup_count=1, compress=True), None)
    doomed = sorted(os.path.basename(p) for p in handle.getFilesToDelete())
    assert doomed == ["app.log.2026-01-01.gz", "app.log.2026-01-02.gz"]
    stdlib = logging.handlers.TimedRotatingFileHandler(
        str(tmp_path / "app.log"), when="D", backupCount=1, delay=True
    )
    stdlib.namer = lambda name: name + ".gz"
    stdlib_doomed = {os.path.basename(p) for p in stdlib.getFilesToDelete()}
    if sys.version_info < (3, 13):
        # Before 3.13 the stdlib counts app.web.log's backup as one of app.log's
        # and so deletes app.log's newest; 3.13 rewrote getFilesToDelete.
        assert "app.log.2026-01-03" in stdlib_doomed
    handle.close()
    stdlib.close()


def test_reopen_after_rename(tmp_path: Path) -> None:
    """A renamed file is noticed at the next flush (like WatchedFileHandler); reopen() starts afresh."""
    files, _ = sink(tmp_path)
    files.write(rec("a", "one"))
    files.flush()
    os.rename(tmp_path / "a.log", tmp_path / "a.log.old")
    files.write(rec("a", "two"))
    files.reopen()
    files.write(rec("a", "three"))
    files.close()
    assert (tmp_path / "a.log.old").read_text() == "one\n"
    assert (tmp_path / "a.log").read_text() == "two\nthree\n"


def test_write_errors_keep_lines_and_retry(tmp_path: Path, disk: FullDisk) -> None:
    """A failing write keeps the lines pending; they are written once the file works again."""
    clock = Clock(1000.0)
    files, stats = sink(tmp_path, clock=clock)
    files.write(rec("a", "kept"))
    files.flush()
    assert stats.errors["disk_error"] == 1
    assert files.pending_lines == 1
    files.flush()  # backing off: not retried yet
    assert stats.errors["disk_error"] == 1
    disk.room = 10**6
    clock.now += 1.0
    files.flush()
    assert (tmp_path / "a.log").read_text() == "kept\n"
    assert stats.written["a.log"] == 1
    assert files.pending_lines == 0
    files.close()


@pytest.mark.usefixtures("disk")
def test_memory_is_bounded_while_the_disk_fails(tmp_path: Path) -> None:
    """Past max_pending_chars the oldest lines are dropped and counted, never silently."""
    files, stats = sink(tmp_path, max_pending_chars=50)
    for i in range(20):
        files.write(rec("a", f"line{i:02d}"))  # 7 bytes each
    files.flush()
    assert stats.dropped["disk_error"] == 20 - files.pending_lines
    assert files.pending_lines == 7
    files.close()
    assert stats.dropped["disk_error"] == 20  # still failing at close: counted, not lost silently


def test_open_files_are_capped(tmp_path: Path) -> None:
    """With many sources only max_open_files descriptors stay open; the rest reopen on demand."""
    files, stats = sink(tmp_path, max_open_files=3)
    for round_ in range(2):
        for i in range(10):
            files.write(rec(f"s{i}", f"r{round_}"))
        files.flush()
    assert sum(1 for h in files.handles().values() if h.fd is not None) <= 3
    files.close()
    assert (tmp_path / "s0.log").read_text() == "r0\nr1\n"
    assert sum(stats.written.values()) == 20


def test_malformed_goes_to_quarantine(tmp_path: Path) -> None:
    """quarantine() writes the reason, detail and escaped frames to _malformed.log."""
    files, _ = sink(tmp_path)
    files.quarantine("no_level", "no level", [b"x\n", b"\x00"])
    files.close()
    (line,) = (tmp_path / "_malformed.log").read_text().splitlines()
    assert line.endswith(" | no_level | no level | x\\n | \\x00")


@pytest.mark.parametrize("compress", [False, True])
def test_rotation_with_compression(tmp_path: Path, compress: bool) -> None:
    """A rotation in the sink renames (and with compress gzips) the file, keeping every line."""
    import gzip

    clock = Clock(1_000.0)
    files, _ = sink(tmp_path, Rotation(when="S", compress=compress), clock=clock)
    files.write(rec("a", "old"))
    files.flush()
    files.handles()["a.log"].rolloverAt = 1_001
    clock.now = 1_002.0
    files.write(rec("a", "new"))
    files.close()
    rotated = [p for p in tmp_path.iterdir() if p.name.startswith("a.log.")]
    assert len(rotated) == 1
    data = gzip.decompress(rotated[0].read_bytes()) if compress else rotated[0].read_bytes()
    assert data == b"old\n"
    assert rotated[0].name.endswith(".gz") is compress
    assert (tmp_path / "a.log").read_text() == "new\n"


@pytest.mark.usefixtures("disk")
def test_a_full_disk_is_retried_with_backoff_not_per_batch(tmp_path: Path) -> None:
    """While a file cannot be written, early flushes do not retry it: one attempt per backoff delay."""
    clock = Clock(1000.0)
    files, stats = sink(tmp_path, clock=clock, batch_chars=64)
    for i in range(2000):
        files.write(rec("a", f"line {i:05d}"))
    assert stats.errors["disk_error"] == 1
    clock.now += 0.6
    files.write(rec("a", "one more"))
    files.flush()
    assert stats.errors["disk_error"] == 2
    assert files.pending_lines == 2001
    files.close()


def test_source_names_that_look_like_backups_are_not_deleted_as_such(tmp_path: Path) -> None:
    """A source named 'web.log.2099-01-01' (file web.log.2099-01-01.log) never counts as a backup of web.log."""
    for name in (
        "web.log.2026-11-20",
        "web.log.2026-11-21.gz",
        "web.log.2099-01-01.log",
        "web.log.2099-01-02.log",
    ):
        (tmp_path / name).write_text("")
    handle = RotatingFile(str(tmp_path / "web.log"), Rotation(when="D", backup_count=2, compress=True), None)
    assert handle.getFilesToDelete() == []
    handle.close()


def test_distinct_files_are_capped_and_the_rest_kept_in_overflow(tmp_path: Path) -> None:
    """A peer inventing sources cannot create files without end: past max_files lines go to _overflow.log."""
    files, stats = sink(tmp_path, max_files=5)
    for i in range(10):
        files.write(rec(f"s{i}", f"from s{i}"))
    files.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.startswith("s")]) == 3  # + _malformed.log and _overflow.log reserved
    assert (tmp_path / "_overflow.log").read_text().splitlines() == [f"from s{i}" for i in range(3, 10)]
    assert stats.errors["too_many_files"] == 7
    assert sum(stats.written.values()) == 10


def test_a_write_cut_by_a_full_disk_is_finished_not_repeated(tmp_path: Path, disk: FullDisk) -> None:
    """Part of a batch reached the file when the disk filled: only the rest is retried, each line once, whole."""
    clock = Clock(1000.0)
    files, stats = sink(tmp_path, clock=clock)
    lines = [f"line {i:03d} " + "x" * (i % 7) for i in range(100)]
    for line in lines:
        files.write(rec("a", line))
    disk.room = 1234  # mid-line
    files.flush()
    assert stats.errors["disk_error"] == 1
    assert 0 < stats.written["a.log"] < 100
    assert stats.written["a.log"] + files.pending_lines == 100
    disk.room = 50  # still not enough: finishes the cut line, cuts another
    clock.now += 1.0
    files.flush()
    assert stats.written["a.log"] + files.pending_lines == 100
    disk.room = 10**6
    clock.now += 2.0
    files.flush()
    assert (tmp_path / "a.log").read_text().splitlines() == lines
    assert stats.written["a.log"] == 100
    assert files.pending_lines == 0
    files.close()


def test_a_cut_line_goes_to_its_own_file_even_after_a_reopen(tmp_path: Path, disk: FullDisk) -> None:
    """SIGHUP (reopen) while a line is cut: its end still follows its start, and the file stays whole."""
    clock = Clock(1000.0)
    files, stats = sink(tmp_path, clock=clock, max_pending_chars=10**6)
    files.write(rec("a", "first line"))
    disk.room = 5
    files.flush()
    os.rename(tmp_path / "a.log", tmp_path / "a.log.1")  # logrotate
    disk.room = 10**6
    files.reopen()
    files.write(rec("a", "second"))
    files.flush(force=True)
    files.close()
    assert (tmp_path / "a.log.1").read_text() == "first line\n"
    assert (tmp_path / "a.log").read_text() == "second\n"
    assert stats.written["a.log"] == 2


def test_a_file_cut_mid_line_gets_a_newline_before_new_lines(tmp_path: Path) -> None:
    """A file left ending mid-line (a SIGKILL mid-write) is ended first, and that is counted."""
    (tmp_path / "a.log").write_bytes(b"whole\ncut sho")
    (tmp_path / "b.log").write_bytes(b"whole\n")
    files, stats = sink(tmp_path)
    files.write(rec("a", "next"))
    files.write(rec("b", "next"))
    files.close()
    assert (tmp_path / "a.log").read_bytes() == b"whole\ncut sho\nnext\n"
    assert (tmp_path / "b.log").read_bytes() == b"whole\nnext\n"
    assert stats.errors["repaired_partial_line"] == 1


def test_symlinks_in_the_directory_are_never_written_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Links planted at a log file, errors.log, _malformed.log or a route subdirectory: targets untouched, lines counted."""
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    logs.mkdir()
    outside.mkdir()
    target = outside / "target"
    target.write_text("precious\n")
    for name in ("a.log", "errors.log", "_malformed.log"):
        (logs / name).symlink_to(target)
    (logs / "web").symlink_to(outside)
    stats = Stats()
    files = FileSink(
        str(logs),
        Router([*default_routes(), parse_route("web.#=web/{source}.log")]),
        text_formatter("%(message)s"),
        Rotation(),
        stats,
    )
    for i in range(3):
        files.write(rec("a", f"a{i}"))
        files.write(rec("a", f"e{i}", "ERROR", 40))
        files.write(rec("web", f"w{i}"))
        files.quarantine("no_level", "x\n\x1b[31m", [b"x"])
        files.flush()
    files.close()
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert (logs / "web.log").read_text() == "w0\nw1\nw2\n"
    # a: 3 + 3 errors; errors.log: 3; web/web.log: 3; _malformed.log: 3
    assert stats.dropped["symlink"] == 15
    refusals = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert len(refusals) == 4  # once per file
    assert all("\n" not in message and "\x1b" not in message for message in refusals)


def test_rotation_prunes_old_backups_in_the_background(tmp_path: Path) -> None:
    """After rollovers only backup_count backups remain per file; other files' backups are left alone."""
    for day in range(1, 6):
        (tmp_path / f"a.log.2026-01-0{day}").write_text("")
        (tmp_path / f"a.web.log.2026-01-0{day}").write_text("")
    noon = 1_768_046_400.0  # 2026-01-10 12:00 UTC
    clock = Clock(noon)
    files, _ = sink(tmp_path, Rotation(when="D", backup_count=2, compress=True), clock=clock)
    files.write(rec("a", "old"))
    files.flush()
    files.handles()["a.log"].rolloverAt = int(noon) + 1
    clock.now = noon + 2
    files.write(rec("a", "new"))
    files.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    backups = [n for n in names if n.startswith("a.log.")]
    assert backups == ["a.log.2026-01-05", "a.log.2026-01-09.gz"]
    assert len([n for n in names if n.startswith("a.web.log.")]) == 5


def test_the_route_cache_is_bounded_by_bytes(tmp_path: Path) -> None:
    """Distinct long topics cannot grow the route cache without bound (it starts over past its byte limit)."""
    files, _ = sink(tmp_path, max_files=20)
    for i in range(200):
        files.write(rec(f"s{i:03d}" + "x" * 100_000, "m"))  # 20 MB of distinct topics
    routes = files._routes  # noqa: SLF001 - the private cache's bound is the point
    topics = [topic for topic in routes if isinstance(topic, str)]
    assert len(topics) == len(routes)  # routed per topic: the keys are the topics
    assert sum(len(topic) for topic in topics) <= 8 * 1024 * 1024
    files.close()


def test_running_out_of_descriptors_closes_idle_files_and_keeps_lines(tmp_path: Path) -> None:
    """EMFILE while opening: idle files are closed and the write retried; nothing is lost or crashes."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    files, stats = sink(tmp_path, max_open_files=256)
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 12, hard))
    try:
        for round_ in range(2):
            for i in range(40):
                files.write(rec(f"s{i}", f"r{round_}"))
            files.flush()
            assert files.pending_lines == 0  # written at once, not left waiting for descriptors
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    files.close()
    assert stats.errors["too_many_open_files"] > 0
    assert sum(stats.written.values()) == 80
    assert (tmp_path / "s39.log").read_text() == "r0\nr1\n"


def test_a_rotation_pass_lists_the_directory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many files rotating together cost one directory listing, not one each (that was quadratic)."""
    noon = 1_768_046_400.0  # 2026-01-10 12:00 UTC
    for i in range(50):
        for day in range(1, 4):
            (tmp_path / f"s{i}.log.2026-01-0{day}").write_text("")
    clock = Clock(noon)
    files, _ = sink(tmp_path, Rotation(when="D", backup_count=2), clock=clock)
    for i in range(50):
        files.write(rec(f"s{i}", "old"))
    files.flush()
    listings: list[str | int] = []
    real_listdir = os.listdir

    def listdir(path: str | int = ".") -> list[str]:
        listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    for handle in files.handles().values():
        handle.rolloverAt = int(noon) + 1
    clock.now = noon + 2
    for i in range(50):
        files.write(rec(f"s{i}", "new"))
    files.flush()
    files.close()
    assert len(listings) == 1
    assert sorted(p.name for p in tmp_path.glob("s7.log*")) == [
        "s7.log",
        "s7.log.2026-01-03",
        "s7.log.2026-01-09",
    ]
    assert (tmp_path / "s7.log").read_text() == "new\n"


def test_compression_never_writes_through_a_planted_temp_link(tmp_path: Path) -> None:
    """A link planted at the gzip temp name is replaced, not followed: its target stays intact."""
    target = tmp_path / "target"
    target.write_text("precious\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log.2026-01-09.gz.tmp").symlink_to(target)
    noon = 1_768_046_400.0  # 2026-01-10 12:00 UTC
    clock = Clock(noon)
    files, _ = sink(logs, Rotation(when="D", compress=True), clock=clock)
    files.write(rec("a", "old"))
    files.flush()
    files.handles()["a.log"].rolloverAt = int(noon) + 1
    clock.now = noon + 2
    files.write(rec("a", "new"))
    files.close()
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in logs.iterdir()) == ["a.log", "a.log.2026-01-09.gz"]


def test_a_failed_rotation_keeps_writing_to_the_current_file(tmp_path: Path) -> None:
    """If the rollover cannot rename (the backup name is taken by a directory), lines still reach the file."""
    (tmp_path / "a.log.2026-01-09").mkdir()
    (tmp_path / "a.log.2026-01-09" / "x").write_text("")
    noon = 1_768_046_400.0  # 2026-01-10 12:00 UTC
    clock = Clock(noon)
    files, stats = sink(tmp_path, Rotation(when="D"), clock=clock)
    files.write(rec("a", "old"))
    files.flush()
    files.handles()["a.log"].rolloverAt = int(noon) + 1
    clock.now = noon + 2
    files.write(rec("a", "new"))
    files.flush()
    files._rotator.shutdown()  # noqa: SLF001 - let the rotation thread finish its attempt (no public way to wait)
    clock.now += 1
    files.flush()
    assert (tmp_path / "a.log").read_text() == "old\nnew\n"
    assert stats.errors["rotate_error"] == 1
    assert files.pending_lines == 0
    files.close()


ALL_WHEN = ["S", "M", "H", "D", "MIDNIGHT", "midnight", *(f"W{day}" for day in range(7))]


@pytest.mark.parametrize("when", ALL_WHEN)
@pytest.mark.parametrize("compress", [False, True])
def test_stdlib_rotated_names_are_backups(tmp_path: Path, when: str, compress: bool) -> None:
    """For every `when`, the name the stdlib itself gives a rotated file is one of our backups, and only ours.

    The stamp table is ours (not edited from the stdlib's private extMatch, which
    changed in Python 3.13), so it is checked against the stdlib's suffix here.
    """
    base = str(tmp_path / "app.log")
    stdlib = logging.handlers.TimedRotatingFileHandler(base, when=when, delay=True)
    if compress:
        stdlib.namer = lambda name: name + ".gz"
    ours = RotatingFile(base, Rotation(when=when, backup_count=1), None)
    names = []
    for moment in (
        time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)),
        time.mktime((2026, 11, 25, 23, 59, 59, 0, 0, -1)),
    ):
        stamp = time.strftime(stdlib.suffix, time.localtime(moment))
        assert rotating_module.stamp_pattern(when).fullmatch(stamp), (when, stamp)
        names.append(os.path.basename(stdlib.rotation_filename(f"{base}.{stamp}")))
        # A source named "web" or "log.<stamp>" is another file's business.
        names.append(f"app.web.log.{stamp}")
        names.append(f"app.log.{stamp}.log")
    assert names[0].startswith("app.log.2026-01-02")
    assert names[0].endswith(".gz") == compress
    # keep=0 reports every backup of app.log, and nothing else.
    assert sorted(rotating_module.backups_to_delete(names, "app.log", ours.stamp, 0)) == sorted(
        [names[0], names[3]]
    )
    assert rotating_module.backups_to_delete(names, "app.log", ours.stamp, 2) == []
    assert rotating_module.backups_to_delete(names, "app.log", ours.stamp, 1) == [names[0]]
    ours.close()
    stdlib.close()


def test_stamp_patterns_cover_the_stdlib_suffixes() -> None:
    """Each table entry matches the stdlib's strftime suffix for that `when`, and nothing longer or shorter."""
    for when in ALL_WHEN:
        stdlib = logging.handlers.TimedRotatingFileHandler(os.devnull, when=when, delay=True)
        stamp = time.strftime(stdlib.suffix, time.localtime(1_800_000_000))
        pattern = rotating_module.stamp_pattern(when)
        assert pattern.fullmatch(stamp)
        assert not pattern.fullmatch(stamp + "0")
        assert not pattern.fullmatch(stamp[:-1])
        assert not pattern.fullmatch(stamp + ".log")
        stdlib.close()
    with pytest.raises(ValueError, match="W7"):
        rotating_module.stamp_pattern("W7")


def test_a_queue_settles_whole_lines_and_keeps_the_end_of_a_cut_one() -> None:
    """settle(): lines wholly written are done; the unwritten end of a cut line becomes the carry."""
    queue = FileQueue("a.log")
    queue.lines = ["one\n", "two\n", "three\n"]
    assert queue.settle(b"", 5, complete=False) == (1, 8)  # "one\n" done, "two\n" cut after "t"
    assert (queue.carry, queue.lines) == (b"wo\n", ["three\n"])
    assert queue.settle(queue.carry, 1, complete=False) == (0, 0)  # the carry itself cut again
    assert queue.carry == b"o\n"
    assert queue.settle(queue.carry, 2 + 6, complete=True) == (2, 6)  # carry finished, then "three\n"
    assert (queue.carry, queue.lines) == (b"", [])


def test_a_queue_stops_at_a_line_boundary_without_a_carry() -> None:
    queue = FileQueue("a.log")
    queue.lines = ["ab\n", "cd\n"]
    assert queue.settle(b"", 3, complete=False) == (1, 3)
    assert (queue.carry, queue.lines) == (b"", ["cd\n"])


def test_a_queue_sheds_its_oldest_lines_first() -> None:
    queue = FileQueue("a.log")
    queue.lines = ["aaaa\n", "bb\n", "c\n"]
    assert queue.drop_oldest(6) == (2, 8)
    assert queue.lines == ["c\n"]
    assert queue.drop_oldest(0) == (0, 0)


def test_a_failing_queue_backs_off_from_half_a_second_to_ten_and_starts_over_after_a_success() -> None:
    queue = FileQueue("a.log")
    assert not queue.recovered()
    delays = []
    for _ in range(7):
        queue.failed(100.0)
        assert queue.retry_at is not None
        delays.append(queue.retry_at - 100.0)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert queue.recovered()
    assert queue.retry_at is None
    queue.failed(100.0)
    assert queue.retry_at == 100.5


def test_before_write_sees_every_file_open_and_unwritten_then_the_writes_land_as_planned(
    tmp_path: Path,
) -> None:
    """The write-ahead hook gets each file's size before and the bytes it will add; nothing is written yet."""
    files, _ = sink(tmp_path)
    seen: list[tuple[list[Any], dict[str, int]]] = []

    def hook(plan: list[Any]) -> None:
        sizes = {path: (tmp_path / path).stat().st_size for path, _, _ in plan}
        seen.append((plan, sizes))

    files.before_write = hook
    files.write(rec("a", "one"))
    files.write(rec("a", "two", "ERROR", 40))
    files.flush()
    ((plan, sizes),) = seen
    assert sorted(plan) == [("a.log", 0, 8), ("errors.log", 0, 4)]
    assert sizes == {"a.log": 0, "errors.log": 0}  # open (created), not yet written
    assert writes_complete(str(tmp_path), [list(entry) for entry in plan]) is True
    files.write(rec("a", "three"))
    files.flush()
    assert seen[1][0] == [("a.log", 8, 6)]
    files.flush()  # nothing to write: nothing announced
    assert len(seen) == 2
    files.close()


def test_nothing_is_announced_while_a_file_cannot_be_written(tmp_path: Path, disk: FullDisk) -> None:
    """A pass that leaves lines pending (a file backing off) announces nothing: its entry would be void."""
    clock = Clock(1000.0)
    files, _ = sink(tmp_path, clock=clock)
    plans: list[list[Any]] = []
    files.before_write = plans.append
    files.write(rec("a", "kept"))
    files.flush()  # announced, then the write fails
    assert plans == [[("a.log", 0, 5)]]
    disk.room = 10**6
    files.write(rec("b", "other"))
    files.flush()  # a.log backs off: b.log is written, nothing announced
    assert len(plans) == 1 and (tmp_path / "b.log").read_text() == "other\n"
    clock.now += 1.0
    files.flush()
    assert plans[-1] == [("a.log", 0, 5)] and (tmp_path / "a.log").read_text() == "kept\n"
    files.close()


def test_the_runs_follow_the_lines_through_a_write_cut_by_a_full_disk(tmp_path: Path, disk: FullDisk) -> None:
    """With track_marks each line's record goes with it: written, kept, or as the end of a cut line."""
    clock = Clock(1000.0)
    files, _ = sink(tmp_path, clock=clock)
    files.track_marks = True
    plans: list[list[Any]] = []
    files.before_write = plans.append

    def write(seq: int | None, text: str) -> None:
        meta = {} if seq is None else {"pub": "p", "seq": seq}
        files.write(Record("a", "INFO", 20, "", text, 0.0, meta=meta))

    write(1, "one")
    write(2, "two")
    write(None, "stock")
    disk.room = 6  # "one\n" and "tw"
    files.flush()
    assert plans[-1] == [("a.log", 0, 14, [["p", 1, 2, 1], [None, None, 1, 1]])]
    disk.room = 10**6
    write(3, "three\nwith a second line")
    clock.now += 1.0
    files.flush()
    # The end of "two" first (as the cut record's own run), then what waited, then the new record.
    ((path, before, added, runs),) = plans[-1]
    assert (path, before, runs) == ("a.log", 6, [["p", 2, 1, 1], [None, None, 1, 1], ["p", 3, 1, 2]])
    text = (tmp_path / "a.log").read_text()
    assert len(text) == before + added and text.startswith("one\ntwo\nstock\nthree\n")
    assert text.endswith(" + with a second line\n")  # a continuation line, prefixed
    files.close()


def test_a_failing_write_ahead_hook_never_stops_the_writes(tmp_path: Path) -> None:
    files, stats = sink(tmp_path)

    def broken(_plan: list[Any]) -> None:
        raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    files.before_write = broken
    files.write(rec("a", "kept"))
    files.flush()
    assert (tmp_path / "a.log").read_text() == "kept\n"
    assert stats.errors["write_ahead"] == 1
    files.close()


def test_publishers_interleaved_line_by_line_leave_the_runs_out(tmp_path: Path) -> None:
    """A pool of workers writing one file makes a run per line: past 32 + 1 per 16 lines the entry
    gives the sizes alone (a cut write is then written again), not a run per line."""
    files, _ = sink(tmp_path)
    files.track_marks = True
    plans: list[list[Any]] = []
    files.before_write = plans.append
    for seq in range(100):
        for worker in ("w1", "w2"):
            files.write(Record("a", "INFO", 20, "", f"{worker} {seq}", 0.0, meta={"pub": worker, "seq": seq}))
    files.flush()
    ((entry,),) = plans
    assert len(entry) == 3  # path, size before, bytes: no runs
    for seq in range(100):
        files.write(Record("a", "INFO", 20, "", f"one {seq}", 0.0, meta={"pub": "w1", "seq": 100 + seq}))
    files.flush()
    assert plans[-1][0][3] == [["w1", 100, 100, 1]]
    files.close()
