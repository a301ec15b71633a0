"""The file sink: records routed to files under one directory, written in batches, retried, reopened on demand."""

from __future__ import annotations

import datetime
import errno
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from zlogcollect.helpers import Backoff, BoundedCache, Throttle
from zlogcollect.routing import MALFORMED_FILE, OVERFLOW_FILE, Router
from zlogcollect.sinks.rotating import (
    Background,
    RefusedFile,
    RotatingFile,
    Rotation,
    Rotator,
    WriteFailed,
)
from zlogcollect.stats import Stats
from zlogcollect.wire import Record, escape_frames
from zlogcollect.writeahead import Mark, PlannedWrite, Run, batch_runs

__all__ = ["FileQueue", "FileSink", "Rotation"]  # Rotation: FileSink's setting, importable beside it

log = logging.getLogger(__name__)

_ROUTE_CACHE_BYTES = 8 * 1024 * 1024
MAX_RUNS_FIXED = 32
MAX_RUNS_PER_LINES = 16
"""A file's runs go into the write-ahead entry only while there are at most 32 + 1 per 16 lines."""


class FileQueue:
    """One file the sink writes: the lines waiting for it, the end of a cut line, its retry schedule.

    Every line routed to the file is in exactly one place: counted written,
    counted dropped, in ``lines``, or (its unwritten end) in ``carry``.
    """

    __slots__ = (
        "backoff",
        "carry",
        "carry_mark",
        "handle",
        "lines",
        "marks",
        "path",
        "refused",
        "retry_at",
        "rotating",
    )

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle: RotatingFile | None = None  # made on the first write
        self.lines: list[str] = []
        self.marks: list[Mark] = []
        """The record of each line (with :attr:`FileSink.track_marks`; else empty)."""
        self.carry_mark: Mark = None
        # The unwritten end of a line the disk cut short: it goes out first, so
        # the line is completed in place instead of written twice.
        self.carry = b""
        self.retry_at: float | None = None  # set while writes fail
        self.backoff: Backoff | None = None
        self.refused = False  # said once that it must not be written
        self.rotating = False  # held by the rotation thread

    def settle(self, carry: bytes, written: int, complete: bool) -> tuple[int, int]:
        """Take *written* bytes of ``carry + lines`` as done; return ``(lines done, characters released)``.

        A line the write stopped in the middle of leaves ``lines`` and its
        unwritten end becomes the carry.
        """
        lines = self.lines
        marks = self.marks
        done = 0
        if carry:
            if written < len(carry):
                self.carry = carry[written:]
                return 0, 0
            written -= len(carry)
            self.carry = b""
            self.carry_mark = None
            done = 1
        if complete:
            count = len(lines)
        else:
            count = 0
            for line in lines:
                encoded = line.encode("utf-8", "backslashreplace")
                if written < len(encoded):
                    if written:
                        self.carry = encoded[written:]
                        if marks:
                            self.carry_mark = marks[count]
                            del marks[: count + 1]
                        released = sum(len(line) for line in lines[: count + 1])
                        del lines[: count + 1]
                        return done + count, released
                    break
                written -= len(encoded)
                count += 1
        released = sum(len(line) for line in lines[:count])
        del lines[:count]
        del marks[:count]
        return done + count, released

    def drop_oldest(self, excess: int) -> tuple[int, int]:
        """Drop the oldest lines until *excess* characters are gone (or none are left): ``(lines, characters)``."""
        lines = self.lines
        count = size = 0
        while count < len(lines) and size < excess:
            size += len(lines[count])
            count += 1
        del lines[:count]
        del self.marks[:count]
        return count, size

    def failed(self, now: float) -> None:
        """A write failed at *now*: the next attempt waits 0.5 s, then doubling up to 10 s."""
        if self.backoff is None:
            self.backoff = Backoff(0.5, 10.0)
        self.retry_at = now + self.backoff.next()

    def recovered(self) -> bool:
        """A write succeeded: True if the file had been failing until now."""
        if self.retry_at is None:
            return False
        self.retry_at = None
        if self.backoff is not None:
            self.backoff.reset()
        return True


class FileTable:
    """Every file admitted so far, at most *max_files*, and which of them each record key is routed to.

    Every distinct source makes a file, so a peer inventing sources could
    otherwise exhaust inodes and memory; past the limit its records are kept in
    one file instead, with their source in each line.
    """

    def __init__(self, router: Router, stats: Stats, max_files: int, clock: Callable[[], float]) -> None:
        self._router = router
        self._stats = stats
        self._max_files = max_files
        self._complaints = Throttle(1, 10.0, clock)
        self.queues = {path: FileQueue(path) for path in (MALFORMED_FILE, OVERFLOW_FILE)}
        # Routes depend only on the topic (source, level, subtopic), plus host and
        # pid when a template uses them, so each distinct key is routed once; the
        # cache starts over when it is full, by entries or by bytes (a peer may
        # send long distinct topics).
        self.routes: BoundedCache[object, tuple[FileQueue, ...]] = BoundedCache(10_000, _ROUTE_CACHE_BYTES)

    def route(self, record: Record, key: object) -> tuple[FileQueue, ...]:
        """The queues for *record* (whose cache key is *key*), remembered for the next record."""
        queues = tuple(self.admit(path) for path in self._router.route(record))
        size = len(record.topic) + sum(len(q.path) for q in queues) + 64
        if size <= _ROUTE_CACHE_BYTES // 16:
            self.routes.put(key, queues, size)
        return queues

    def admit(self, path: str) -> FileQueue:
        """The queue for *path*, or the overflow file's once max_files distinct files exist."""
        queue = self.queues.get(path)
        if queue is not None:
            return queue
        if len(self.queues) >= self._max_files:
            self._stats.errors["too_many_files"] += 1
            if self._complaints.allow():
                log.error(
                    "more than %d files: records for %r and other new files go to %s",
                    self._max_files,
                    path,
                    OVERFLOW_FILE,
                )
            return self.queues[OVERFLOW_FILE]
        queue = self.queues[path] = FileQueue(path)
        return queue


class OpenFiles:
    """The files with an open descriptor, least recently written first, at most *limit* of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: OrderedDict[str, FileQueue] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def touch(self, queue: FileQueue) -> None:
        """Mark *queue*'s file most recently used; close the least recently written past the limit."""
        self._open[queue.path] = queue
        self._open.move_to_end(queue.path)
        if len(self._open) > self.limit:
            # The least recently written file that the rotation thread is not holding.
            oldest = next((q for q in self._open.values() if not q.rotating), queue)
            self.close(oldest)

    def close(self, queue: FileQueue) -> None:
        """Close *queue*'s descriptor (its schedule stays; the next write opens it again)."""
        self._open.pop(queue.path, None)
        if queue.handle is not None:
            queue.handle.close_stream()

    def close_idle(self, keep: FileQueue) -> None:
        """Close the least recently written half of the open files (never *keep*)."""
        victims = [q for q in self._open.values() if q is not keep][: max(1, len(self._open) // 2)]
        for queue in victims:
            self.close(queue)

    def forget(self) -> None:
        self._open.clear()


class FileSink:
    """Formats records, routes them to files under one directory and writes them in batches.

    Every line routed to a file ends up counted in exactly one place:
    ``stats.written[path]`` once it reached the OS, ``stats.dropped[reason]``
    if it had to be given up, or it is still pending in memory (a line cut
    short by a full disk stays pending as the rest of its bytes).

    The batch and memory bounds (*batch_chars*, *max_pending_chars*) count
    characters of the formatted lines, which are encoded only when written.
    """

    def __init__(
        self,
        directory: str,
        router: Router,
        render: Callable[[Record], str],
        rotation: Rotation,
        stats: Stats,
        clock: Callable[[], float] = time.time,
        batch_chars: int = 256 * 1024,
        max_pending_chars: int = 64 * 1024 * 1024,
        max_open_files: int = 256,
        max_files: int = 10_000,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self._router = router
        self._render = render
        self._rotation = rotation
        self._stats = stats
        self._clock = clock
        self._batch_chars = batch_chars
        self._max_pending = max_pending_chars
        self._background = Background()
        self._rotator: Rotator[FileQueue] = Rotator(open_budget=max_open_files // 2)
        self._closing = False
        self._open = OpenFiles(max_open_files)
        self._table = FileTable(router, stats, max_files, clock)
        self._queues = self._table.queues
        self._routes = self._table.routes  # looked up here: only a miss costs a call
        self._waiting: dict[str, FileQueue] = {}  # the queues with lines or a carry
        self._pending_chars = 0
        self._fresh_chars = 0  # queued since the last flush: what triggers an early one
        # One line per file every 10 s: a full disk must not flood stderr.
        self._complaints = Throttle(1, 10.0, clock)
        self.track_marks = False
        """Keep each line's record (publisher, seq) for :attr:`before_write`'s runs (the collector)."""
        self.before_write: Callable[[list[PlannedWrite]], None] | None = None
        """Called with the writes of a flush that leaves nothing pending, after every file is open
        and before the first byte is written (the collector's and the writer's write-ahead
        entry: :func:`zlogcollect.writeahead.writes_complete` tells at the next start whether they all reached the files).
        It must not raise."""

    @property
    def pending_lines(self) -> int:
        """Lines accepted but not yet (completely) written."""
        return sum(len(q.lines) + bool(q.carry) for q in self._waiting.values())

    def handles(self) -> dict[str, RotatingFile]:
        """The files opened so far by path (for tests and benchmarks that move a rollover time)."""
        return {path: q.handle for path, q in self._queues.items() if q.handle is not None}

    def write(self, record: Record) -> None:
        """Queue *record* for every file its routes name; flush early if the batch is large."""
        key = record.topic if self._router.per_topic else self._router.cache_key(record)
        queues = self._routes.get(key)
        if queues is None:
            queues = self._table.route(record, key)
        if not queues:
            self._stats.unrouted += 1
            return
        line = self._render(record)
        waiting = self._waiting
        for queue in queues:
            lines = queue.lines
            if not lines:
                waiting[queue.path] = queue
            lines.append(line)
        if self.track_marks:
            meta = record.meta
            # (None, None) and half marks count as no mark (batch_runs); checked only there.
            mark = (meta.get("pub"), meta.get("seq")) if meta else None
            for queue in queues:
                queue.marks.append(mark)
        size = len(line) * len(queues)
        self._pending_chars += size
        self._fresh_chars += size
        if self._fresh_chars >= self._batch_chars:
            self.flush()

    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None:
        """Keep a safe copy of a frame set that could not be parsed, with the reason."""
        stamp = datetime.datetime.fromtimestamp(self._clock()).isoformat(sep=" ", timespec="milliseconds")
        line = f"{stamp} | {reason} | {detail} | {escape_frames(frames)}\n"
        queue = self._queues[MALFORMED_FILE]
        queue.lines.append(line)
        if self.track_marks:
            queue.marks.append(None)
        self._waiting[MALFORMED_FILE] = queue
        self._pending_chars += len(line)
        self._fresh_chars += len(line)

    def flush(self, force: bool = False) -> None:
        """Write every pending batch; on failure keep what did not reach the file and retry with backoff.

        A file that failed is retried after 0.5 s, then after doubling delays up
        to 10 s (every flush with *force*), so a full disk costs the receive loop
        one attempt per file per delay instead of one per batch. What reached
        the file before the failure is counted written and never sent again.
        """
        now = self._clock()
        self._fresh_chars = 0
        self._collect_rotations(now)
        due: list[FileQueue] = []
        ready: list[FileQueue] = []
        for queue in list(self._waiting.values()):
            if not queue.lines and not queue.carry:
                del self._waiting[queue.path]
                continue
            if queue.rotating or (not force and queue.retry_at is not None and queue.retry_at > now):
                continue
            handle = queue.handle
            if handle is not None and not queue.carry and not self._closing and int(now) >= handle.rolloverAt:
                due.append(queue)
                continue
            ready.append(queue)
        batches = [self._batch(queue) for queue in ready]
        prepared = False
        if self.before_write is not None and ready and len(ready) == len(self._waiting):
            prepared = self._announce(ready, batches, now)
        for queue, data in zip(ready, batches, strict=True):
            if queue.lines or queue.carry:  # not refused while opening
                self._flush_one(queue, now, data, prepared)
        if due:
            # One job for the whole pass: the thread starts once the loop is done with it.
            for queue in due:
                queue.rotating = True
            self._rotator.submit([(queue, queue.handle) for queue in due if queue.handle is not None], now)
        if self._pending_chars > self._max_pending:
            self._shed()

    @staticmethod
    def _batch(queue: FileQueue) -> bytes:
        return queue.carry + "".join(queue.lines).encode("utf-8", "backslashreplace")

    def _announce(self, ready: list[FileQueue], batches: list[bytes], now: float) -> bool:
        """Open every file of this pass, then tell :attr:`before_write` where each batch will end;
        True if every file is open (rotated if due, checked for replacement) for the writes.

        Nothing is announced if a file cannot be opened (its lines stay pending, so the
        write-ahead entry would be void anyway); a refused file's lines are dropped here.
        """
        plan: list[PlannedWrite] = []
        for queue, data in zip(ready, batches, strict=True):
            try:
                handle = self._prepare(queue, now, continuing=bool(queue.carry))
                assert handle.fd is not None
                size = os.fstat(handle.fd).st_size
            except RefusedFile as exc:
                self._refuse(queue, exc, len(queue.lines) + bool(queue.carry))
                continue
            except OSError:
                return False  # the write below fails the same way and keeps the lines
            runs = self._runs(queue, data)
            plan.append(
                (queue.path, size, len(data)) if runs is None else (queue.path, size, len(data), runs)
            )
        if plan and self.before_write is not None:
            try:
                self.before_write(plan)
            except Exception:  # the write-ahead entry must never stop the writes
                self._stats.errors["write_ahead"] += 1
                if self._complaints.allow("write_ahead"):
                    log.exception("the write-ahead entry failed (the batch is written without it)")
        return True

    def _runs(self, queue: FileQueue, data: bytes) -> list[Run] | None:
        """The records of the batch's lines as runs (see :func:`batch_runs`), if they are known."""
        if not self.track_marks or len(queue.marks) != len(queue.lines):
            return None
        marks = queue.marks
        items = len(marks) + bool(queue.carry)
        if queue.carry:
            marks = [queue.carry_mark, *marks]
        if data.count(b"\n") == items:
            runs = batch_runs(marks, None)  # one line each: the usual case
        else:
            newlines = [line.count("\n") for line in queue.lines]
            if queue.carry:
                newlines.insert(0, queue.carry.count(b"\n"))
            runs = batch_runs(marks, newlines)
        # Publishers interleaved line by line (a pool of workers in one file) make a run per line:
        # the entry would grow as large as a good part of the batch. Then the sizes alone must do.
        return runs if len(runs) <= MAX_RUNS_FIXED + items // MAX_RUNS_PER_LINES else None

    def _flush_one(
        self, queue: FileQueue, now: float, data: bytes | None = None, prepared: bool = False
    ) -> None:
        carry, lines = queue.carry, queue.lines
        if data is None:
            data = self._batch(queue)
        error: OSError | None = None
        handle = queue.handle
        try:
            if prepared and handle is not None and handle.fd is not None:
                written = handle.write_batch(data, now, bool(carry))  # opened by _announce just now
            else:
                written = self._write(queue, data, now, continuing=bool(carry))
        except RefusedFile as exc:
            self._refuse(queue, exc, len(lines) + bool(carry))
            return
        except WriteFailed as exc:
            written, error = exc.written, exc.cause
        except OSError as exc:
            written, error = 0, exc
        done, released = queue.settle(carry, written, error is None)
        self._stats.written[queue.path] += done
        self._pending_chars -= released
        if not queue.lines and not queue.carry:
            self._waiting.pop(queue.path, None)
        if error is None:
            if queue.recovered():
                log.info("%r is writable again", os.path.join(self.directory, queue.path))
            return
        self._stats.errors["disk_error"] += 1
        self._complain(queue, error)
        queue.failed(now)
        if queue.handle is not None and not queue.carry:
            # Reopened next time (and checked for a cut line); with a carry the
            # descriptor stays, so the line is finished in the same file.
            self._open.close(queue)

    def _collect_rotations(self, now: float) -> None:
        """Take back the files the rotation thread is done with; a failed one is retried later."""
        done = self._rotator.collect()
        for queue, error in done:
            queue.rotating = False
            handle = queue.handle
            assert handle is not None
            if handle.fd is not None:
                self._open.touch(queue)  # opened by the rotation thread: under the LRU cap now
            if error is None:
                continue
            # Keep writing to the current file and try the rotation again in a
            # minute: lines must not wait in memory on a rename that keeps failing.
            self._stats.errors["rotate_error"] += 1
            self._complain(queue, error)
            handle.rolloverAt = int(now) + 60
        if done and not self._rotator.running:
            self._background.start_pruning()

    def _prepare(self, queue: FileQueue, now: float, continuing: bool) -> RotatingFile:
        """The queue's file rotated if due and open for appending (a cut line of an earlier run ended)."""
        handle = self._file(queue)
        # While a cut line is being finished the old descriptor is kept even if
        # the file was renamed (logrotate): its end belongs with its start.
        if not continuing and handle.replaced():
            log.warning("%r was removed or replaced; reopening it", handle.baseFilename)
            self._stats.errors["reopened"] += 1
            handle.close_stream()
        try:
            handle.prepare(now, continuing)
        except OSError as exc:
            if isinstance(exc, RefusedFile) or exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # Out of descriptors: give back idle files, then try once more; if
            # that fails too it is a disk error like any other (kept, retried).
            self._stats.errors["too_many_open_files"] += 1
            self._open.close_idle(queue)
            handle.prepare(now, continuing)
        return handle

    def _write(self, queue: FileQueue, data: bytes, now: float, continuing: bool) -> int:
        return self._prepare(queue, now, continuing).write_batch(data, now, continuing)

    def _refuse(self, queue: FileQueue, exc: RefusedFile, count: int) -> None:
        """Drop (and count) the lines for a file that must not be written; say so once per file."""
        self._stats.dropped[exc.reason] += count
        self._pending_chars -= sum(len(line) for line in queue.lines)
        queue.lines = []
        queue.marks = []
        queue.carry = b""
        queue.carry_mark = None
        self._waiting.pop(queue.path, None)
        if not queue.refused:
            queue.refused = True
            what = "is a symbolic link" if exc.reason == "symlink" else "is not a regular file"
            log.error(
                "refusing to write %r: it (or a directory on its way) %s; its records are dropped (%s)",
                exc.filename,
                what,
                exc.reason,
            )

    def _note(self, kind: str, path: str) -> None:
        self._stats.errors[kind] += 1
        log.warning("%r ended in a cut line (a crash mid-write?); added a newline before appending", path)

    def _shed(self) -> None:
        """Drop the oldest lines of the files that cannot be written until memory is under the limit."""
        waiting = list(self._waiting.values())
        for queue in [q for q in waiting if q.lines and q.retry_at is not None] or waiting:
            dropped, size = queue.drop_oldest(self._pending_chars - self._max_pending)
            self._pending_chars -= size
            self._stats.dropped["disk_error"] += dropped

    def _complain(self, queue: FileQueue, exc: Exception) -> None:
        if self._complaints.allow(queue.path):
            kind = "disk full" if getattr(exc, "errno", None) == errno.ENOSPC else "write failed"
            log.error(
                "%s for %r: %s; keeping %d pending lines in memory and retrying",
                kind,
                os.path.join(self.directory, queue.path),
                getattr(exc, "strerror", None) or exc,
                len(queue.lines) + bool(queue.carry),
            )

    def _file(self, queue: FileQueue) -> RotatingFile:
        handle = queue.handle
        if handle is None:
            full = os.path.join(self.directory, queue.path)
            handle = queue.handle = RotatingFile(
                full, self._rotation, self._background, root=self.directory, note=self._note
            )
        self._open.touch(queue)
        return handle

    def reopen(self) -> None:
        """Flush, then close every file so the next write opens it afresh (after logrotate)."""
        self.flush(force=True)
        for queue in self._queues.values():
            # A cut line is finished in its own file first; a rotating file is reopened anyway.
            if queue.handle is not None and not queue.carry and not queue.rotating:
                self._open.close(queue)

    def close(self) -> None:
        """Finish rotations, flush what can be written, close every file and finish compression and pruning."""
        self._rotator.shutdown()
        self._closing = True  # from here on a due file is rotated in line
        self.flush(force=True)
        for queue in self._queues.values():
            if queue.handle is not None:
                queue.handle.close()
        self._open.forget()
        self._background.start_pruning()
        self._background.close()
        for queue in self._waiting.values():
            self._stats.dropped["disk_error"] += len(queue.lines) + bool(queue.carry)
            queue.lines = []
            queue.marks = []
            queue.carry = b""
            queue.carry_mark = None
        self._waiting.clear()
        self._pending_chars = 0
