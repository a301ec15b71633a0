"""Faults the file sink must survive as a real daemon: a full then freed disk, a cut line, planted symlinks."""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    CollectorProcess,
    StockSender,
    fill,
    read_lines,
    short_ipc_endpoint,
    small_tmpfs,
    wait_until,
)

pytestmark = pytest.mark.e2e

RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \| INFO \| app \| - \| - \| record (\d{5}) x{60}$"
)


def start(collectors: list[CollectorProcess], logdir: Path, *args: str) -> tuple[CollectorProcess, str]:
    endpoint = short_ipc_endpoint()
    proc = CollectorProcess(["--flush-interval", "0.1", "--bind", endpoint, "--dir", str(logdir), *args])
    collectors.append(proc)
    proc.wait_ready()
    return proc, endpoint


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2m tmpfs of our own, unmounted afterwards."""
    with small_tmpfs(tmp_path, "2m") as mnt:
        yield mnt


def test_disk_full_then_freed_every_line_once_and_whole(
    collectors: list[CollectorProcess], small_disk: Path
) -> None:
    """The disk fills in the middle of a batch, then space comes back: each record is in the file once, uncut."""
    logdir = small_disk / "logs"
    logdir.mkdir()
    proc, endpoint = start(collectors, logdir)
    sender = StockSender(endpoint, "app")
    total = 8000
    try:
        sender.wait_connected(logdir)
        gap = small_disk / "gap"
        gap.write_bytes(b"\0" * 20_000)
        fill(small_disk / "filler", smallest=512)
        gap.unlink()  # ~20 kB free: the first batch of ~700 kB is cut part way
        for i in range(total):
            sender.logger.info("record %05d %s", i, "x" * 60)
        wait_until(lambda: "disk full" in proc.stderr, what="the disk-full report")
        assert proc.proc.poll() is None
        (small_disk / "filler").unlink()
        wait_until(lambda: len(read_lines(logdir / "app.log")) >= total, timeout=20, what="every record")
    finally:
        sender.close()
    assert proc.stop() == 0
    lines = read_lines(logdir / "app.log")
    matches = [RECORD.match(line) for line in lines]
    assert [line for line, m in zip(lines, matches, strict=True) if m is None] == []  # none cut or glued
    seen = Counter(int(m.group(1)) for m in matches if m)
    assert [n for n, c in seen.items() if c > 1] == []  # none repeated
    assert sorted(seen) == list(range(total))  # none lost
    assert "disk_error:" in proc.summary()


def test_restart_after_a_kill_mid_line_starts_a_new_line(
    collectors: list[CollectorProcess], logdir: Path
) -> None:
    """A file left ending mid-line (SIGKILL during a write) gets its newline before the next record, counted."""
    (logdir / "app.log").write_bytes(
        b"2026-12-01 10:00:00.000 | INFO | app | - | - | whole\n2026-12-01 10:00:00.0"
    )
    proc, endpoint = start(collectors, logdir)
    sender = StockSender(endpoint, "app")
    try:
        sender.wait_connected(logdir)
        sender.logger.info("after restart")
        wait_until(lambda: "after restart" in (logdir / "app.log").read_text(), what="the new record")
    finally:
        sender.close()
    assert proc.stop() == 0
    lines = read_lines(logdir / "app.log")
    assert lines[1] == "2026-12-01 10:00:00.0"
    assert lines[2].endswith(" | INFO | app | - | - | after restart")
    assert "repaired_partial_line:1" in proc.summary()


def test_symlinks_planted_in_the_directory_are_not_followed(
    collectors: list[CollectorProcess], logdir: Path, tmp_path: Path
) -> None:
    """Links at app1.log, errors.log, _malformed.log and a route subdirectory: targets untouched, drops counted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target"
    target.write_text("precious\n")
    for name in ("app1.log", "errors.log", "_malformed.log"):
        (logdir / name).symlink_to(target)
    (logdir / "web").symlink_to(outside)
    proc, endpoint = start(collectors, logdir, "--route", "web.#=web/{source}.log")
    app1, web, ok = (StockSender(endpoint, name) for name in ("app1", "web", "ok"))
    try:
        for sender in (app1, web, ok):
            sender.wait_connected(logdir)
        app1.logger.info("to a link")
        app1.logger.error("to two links")
        web.logger.info("through a linked directory")
        ok.socket.send_multipart([b"only.one.frame\n\x1b[31m"])
        proc.send(signal.SIGUSR1)
        wait_until(lambda: (logdir / "web.log").exists(), what="web.log")
        # 1 + 2 (app1.log twice, errors.log) + 1 (web/web.log) + 1 (_malformed.log)
        wait_until(
            lambda: "symlink:5" in proc.stderr or proc.send(signal.SIGUSR1), interval=0.2, what="five drops"
        )
    finally:
        for sender in (app1, web, ok):
            sender.close()
    assert proc.stop() == 0
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["target"]
    assert "symlink:5" in proc.summary()
    refusals = [line for line in proc.stderr_lines if "refusing to write" in line]
    assert len(refusals) == 4  # once per file
