"""Rotating log files built on TimedRotatingFileHandler, written in batches, reopened on demand."""

from __future__ import annotations

import datetime
import errno
import gzip
import logging
import logging.handlers
import os
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from zlogcollect.routing import MALFORMED_FILE, OVERFLOW_FILE, Router
from zlogcollect.stats import Stats
from zlogcollect.wire import Record, escape_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Rotation:
    """The settings of ``logging.handlers.TimedRotatingFileHandler``, with its names."""

    when: str = "midnight"
    interval: int = 1
    backup_count: int = 0
    utc: bool = False
    at_time: datetime.time | None = None
    compress: bool = False


class RotatingFile(logging.handlers.TimedRotatingFileHandler):
    """One log file: the stdlib's rotation schedule and names, fed whole batches of lines.

    Only the write path is ours: lines arrive already formatted and are
    written with one ``write`` per batch instead of one ``emit`` per record.
    Rollover time, rotated names (``app.log.2026-11-25``), ``backupCount``
    clean-up, ``utc`` and ``atTime`` are the stdlib's own code.
    """

    def __init__(self, path: str, rotation: Rotation, compressor: Compressor | None) -> None:
        super().__init__(
            path,
            when=rotation.when,
            interval=rotation.interval,
            backupCount=rotation.backup_count,
            encoding="utf-8",
            delay=True,
            utc=rotation.utc,
            atTime=rotation.at_time,
            errors="backslashreplace",
        )
        self._compressor = compressor
        if compressor is not None:
            self.namer = _gz_name
            self.rotator = compressor.rotate
        self._identity: tuple[int, int] | None = None
        # The stdlib's extMatch also accepts a trailing ".word", so a source named
        # "web.log.2099-01-01" (file web.log.2099-01-01.log) would pass for a backup
        # of web.log and get real backups deleted. Only the bare date counts here.
        self._stamp = re.compile(self.extMatch.pattern.replace(r"(\.\w+)?$", "$"), re.ASCII)

    def write_batch(self, text: str, now: float) -> None:
        """Rotate if the schedule says so at *now*, then append *text* and flush it to the OS."""
        if self.due(now):
            self.doRollover()
        self._ensure_open()
        assert self.stream is not None
        self.stream.write(text)
        self.stream.flush()

    def due(self, now: float) -> bool:
        """The stdlib's ``shouldRollover`` with the time passed in instead of read from the clock."""
        t = int(now)
        if t < self.rolloverAt:
            return False
        # As the stdlib does (gh-89564): never rotate something that is not a regular file.
        if os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename):
            self.rolloverAt = self.computeRollover(t)
            return False
        return True

    def _ensure_open(self) -> None:
        if self.stream is None:
            self.stream = self._open()
            stat = os.fstat(self.stream.fileno())
            self._identity = (stat.st_dev, stat.st_ino)

    def replaced(self) -> bool:
        """True if the open file was deleted or renamed under us (it must be reopened)."""
        if self.stream is None or self._identity is None:
            return False
        try:
            stat = os.stat(self.baseFilename)
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity

    def close_stream(self) -> None:
        """Close the file but keep the schedule; the next batch opens it again."""
        self.acquire()
        try:
            if self.stream is not None:
                stream, self.stream = self.stream, None
                try:
                    stream.close()
                except OSError:
                    pass  # a failed flush on close is counted by the next write attempt
        finally:
            self.release()

    def getFilesToDelete(self) -> list[str]:
        """Backups of *this* file only.

        The stdlib version, once a namer is set, also matches other files that
        share the prefix before the first dot, so ``app.log`` would delete the
        backups of ``app.web.log``. Match ``<base>.<suffix>[.gz]`` exactly.
        """
        directory, base = os.path.split(self.baseFilename)
        prefix = base + "."
        stamps: dict[str, list[str]] = {}
        for name in os.listdir(directory):
            if not name.startswith(prefix):
                continue
            stamp = name[len(prefix) :]
            if stamp.endswith(".gz"):
                stamp = stamp[:-3]
            if self._stamp.fullmatch(stamp):
                stamps.setdefault(stamp, []).append(os.path.join(directory, name))
        if len(stamps) <= self.backupCount:
            return []
        doomed = sorted(stamps)[: len(stamps) - self.backupCount]
        return [path for stamp in doomed for path in stamps[stamp]]


def _gz_name(name: str) -> str:
    return name + ".gz"


class Compressor:
    """Gzips rotated files in one background thread so the receive loop never waits on it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zlogcollect-gzip")
        self._pending: list[Future[None]] = []

    def rotate(self, source: str, dest: str) -> None:
        """Rename now (cheap, keeps rotation atomic), compress later."""
        plain = dest[:-3] if dest.endswith(".gz") else dest
        os.rename(source, plain)
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(_gzip_file, plain, dest))

    def close(self) -> None:
        """Finish every compression that was started."""
        self._pool.shutdown(wait=True)
        for future in self._pending:
            exc = future.exception()
            if exc is not None:
                log.error("could not compress a rotated file: %s", exc)


def _gzip_file(plain: str, dest: str) -> None:
    tmp = dest + ".tmp"
    with open(plain, "rb") as src, gzip.open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)
    os.replace(tmp, dest)
    os.remove(plain)


class FileSink:
    """Formats records, routes them to files under one directory and writes them in batches.

    Every line routed to a file ends up counted in exactly one place:
    ``stats.written[path]`` once it reached the OS, ``stats.dropped[reason]``
    if it had to be given up, or it is still pending in memory.
    """

    def __init__(
        self,
        directory: str,
        router: Router,
        render: Callable[[Record], str],
        rotation: Rotation,
        stats: Stats,
        clock: Callable[[], float] = time.time,
        batch_bytes: int = 256 * 1024,
        max_pending_bytes: int = 64 * 1024 * 1024,
        max_open_files: int = 256,
        max_files: int = 10_000,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self._router = router
        self._render = render
        self._rotation = rotation
        self._stats = stats
        self._clock = clock
        self._batch_bytes = batch_bytes
        self._max_pending = max_pending_bytes
        self._max_open = max_open_files
        self._compressor = Compressor() if rotation.compress else None
        self._files: dict[str, RotatingFile] = {}
        self._routes: dict[object, tuple[str, ...]] = {}
        self._known: set[str] = {MALFORMED_FILE, OVERFLOW_FILE}
        self._max_files = max_files
        self._open: OrderedDict[str, None] = OrderedDict()  # least recently written first
        self._pending: dict[str, list[str]] = {}
        self._pending_bytes = 0
        self._fresh_bytes = 0  # queued since the last flush: what triggers an early one
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._last_complaint: dict[str, float] = {}

    @property
    def pending_lines(self) -> int:
        """Lines accepted but not yet written."""
        return sum(len(lines) for lines in self._pending.values())

    def write(self, record: Record) -> None:
        """Queue *record* for every file its routes name; flush early if the batch is large."""
        # Routes depend only on the topic (source, level, subtopic), plus host and
        # pid when a template uses them, so each distinct key is routed once; the
        # cache starts over when it is full.
        key = record.topic if self._router.per_topic else self._router.cache_key(record)
        paths = self._routes.get(key)
        if paths is None:
            if len(self._routes) >= 10_000:
                self._routes.clear()
            paths = self._routes[key] = tuple(self._admit(path) for path in self._router.route(record))
        if not paths:
            self._stats.unrouted += 1
            return
        line = self._render(record)
        pending = self._pending
        for path in paths:
            lines = pending.get(path)
            if lines is None:
                lines = pending[path] = []
            lines.append(line)
        size = len(line) * len(paths)
        self._pending_bytes += size
        self._fresh_bytes += size
        if self._fresh_bytes >= self._batch_bytes:
            self.flush()

    def _admit(self, path: str) -> str:
        """*path*, or the overflow file once max_files distinct files exist.

        Every distinct source makes a file, so a peer inventing sources could
        otherwise exhaust inodes and memory; past the limit its records are
        kept in one file instead, with their source in each line.
        """
        if path in self._known:
            return path
        if len(self._known) >= self._max_files:
            self._stats.errors["too_many_files"] += 1
            now = self._clock()
            if now - self._last_complaint.get(OVERFLOW_FILE, 0.0) >= 10.0:
                self._last_complaint[OVERFLOW_FILE] = now
                log.error(
                    "more than %d files: records for %s and other new files go to %s",
                    self._max_files,
                    path,
                    OVERFLOW_FILE,
                )
            return OVERFLOW_FILE
        self._known.add(path)
        return path

    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None:
        """Keep a safe copy of a frame set that could not be parsed, with the reason."""
        stamp = datetime.datetime.fromtimestamp(self._clock()).isoformat(sep=" ", timespec="milliseconds")
        self._queue(MALFORMED_FILE, f"{stamp} | {reason} | {detail} | {escape_frames(frames)}\n")

    def _queue(self, path: str, line: str) -> None:
        lines = self._pending.get(path)
        if lines is None:
            lines = self._pending[path] = []
        lines.append(line)
        self._pending_bytes += len(line)
        self._fresh_bytes += len(line)

    def flush(self, force: bool = False) -> None:
        """Write every pending batch; on failure keep it (bounded) and retry with backoff.

        A file that failed is retried after 0.5 s, then after doubling delays up
        to 10 s (every flush with *force*), so a full disk costs the receive loop
        one attempt per file per delay instead of one per batch.
        """
        now = self._clock()
        self._fresh_bytes = 0
        for path in list(self._pending):
            lines = self._pending[path]
            if not lines:
                continue
            if not force and self._retry_at.get(path, 0.0) > now:
                continue
            try:
                handle = self._file(path)
                if handle.replaced():
                    log.warning("%s was removed or replaced; reopening it", handle.baseFilename)
                    self._stats.errors["reopened"] += 1
                    handle.close_stream()
                handle.write_batch("".join(lines), now)
            except OSError as exc:
                self._stats.errors["disk_error"] += 1
                self._complain(path, exc, now)
                delay = min(self._backoff.get(path, 0.25) * 2, 10.0)
                self._backoff[path] = delay
                self._retry_at[path] = now + delay
                # A partial write may have reached the file; the stream is reopened
                # next time, and the whole batch is retried (rare duplicates beat loss).
                if path in self._files:
                    self._files[path].close_stream()
                continue
            if path in self._retry_at:
                del self._retry_at[path]
                del self._backoff[path]
                log.info("%s is writable again", os.path.join(self.directory, path))
            self._stats.written[path] += len(lines)
            self._pending_bytes -= sum(len(line) for line in lines)
            del self._pending[path]
        if self._pending_bytes > self._max_pending:
            self._shed()

    def _shed(self) -> None:
        """Drop the oldest lines of the files that cannot be written until memory is under the limit."""
        stuck = [path for path in self._pending if path in self._retry_at] or list(self._pending)
        for path in stuck:
            lines = self._pending[path]
            dropped = 0
            while dropped < len(lines) and self._pending_bytes > self._max_pending:
                self._pending_bytes -= len(lines[dropped])
                dropped += 1
            del lines[:dropped]
            self._stats.dropped["disk_error"] += dropped

    def _complain(self, path: str, exc: OSError, now: float) -> None:
        # One line per file every 10 s: a full disk must not flood stderr.
        if now - self._last_complaint.get(path, 0.0) >= 10.0:
            self._last_complaint[path] = now
            kind = "disk full" if exc.errno == errno.ENOSPC else "write failed"
            log.error(
                "%s for %s: %s; keeping %d pending lines in memory and retrying",
                kind,
                os.path.join(self.directory, path),
                exc.strerror or exc,
                len(self._pending.get(path, ())),
            )

    def _file(self, path: str) -> RotatingFile:
        handle = self._files.get(path)
        if handle is None:
            full = os.path.join(self.directory, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            handle = self._files[path] = RotatingFile(full, self._rotation, self._compressor)
        self._open[path] = None
        self._open.move_to_end(path)
        if len(self._open) > self._max_open:
            oldest, _ = self._open.popitem(last=False)
            self._files[oldest].close_stream()
        return handle

    def reopen(self) -> None:
        """Flush, then close every file so the next write opens it afresh (after logrotate)."""
        self.flush(force=True)
        for handle in self._files.values():
            handle.close_stream()
        self._open.clear()

    def close(self) -> None:
        """Flush what can be written, close every file and finish pending compression."""
        self.flush(force=True)
        for handle in self._files.values():
            handle.close()
        self._open.clear()
        if self._compressor is not None:
            self._compressor.close()
        if self._pending_bytes:
            for lines in self._pending.values():
                self._stats.dropped["disk_error"] += len(lines)
            self._pending.clear()
            self._pending_bytes = 0
