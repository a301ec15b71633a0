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
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from zlogcollect.helpers import atomic_file
from zlogcollect.routing import MALFORMED_FILE, OVERFLOW_FILE, Router
from zlogcollect.stats import Stats
from zlogcollect.wire import Record, escape_frames

log = logging.getLogger(__name__)

# Read-write so the last byte can be checked on open (a file cut mid-line by a
# SIGKILL gets its newline back); never through a link planted in --dir.
_FILE_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROUTE_CACHE_BYTES = 8 * 1024 * 1024
_os_write = os.write  # one name the unit tests can replace to simulate a full disk


class RefusedFile(OSError):
    """A path in --dir that must not be written: a symbolic link, or not a regular file."""

    def __init__(self, reason: str, path: str) -> None:
        super().__init__(errno.ELOOP if reason == "symlink" else errno.EINVAL, reason, path)
        self.reason = reason


def open_dir(root: str, subdir: str, create: bool) -> int:
    """A descriptor for *root*/*subdir*, creating missing parts, never following a link below *root*."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in subdir.split(os.sep) if subdir else ():
            if part in ("", "."):
                continue
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = os.lstat(part, dir_fd=fd).st_mode
                    reason = "symlink" if stat.S_ISLNK(kind) else "not_a_file"
                    raise RefusedFile(reason, os.path.join(root, subdir)) from exc
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def backups_to_delete(names: Sequence[str], base: str, stamp: re.Pattern[str], keep: int) -> list[str]:
    """Names among *names* that are backups of *base* beyond the newest *keep*.

    The stdlib version, once a namer is set, also matches other files that
    share the prefix before the first dot, so ``app.log`` would delete the
    backups of ``app.web.log``. Match ``<base>.<suffix>[.gz]`` exactly.
    """
    prefix = base + "."
    stamps: dict[str, list[str]] = {}
    for name in names:
        if not name.startswith(prefix):
            continue
        suffix = name[len(prefix) :]
        if suffix.endswith(".gz"):
            suffix = suffix[:-3]
        if stamp.fullmatch(suffix):
            stamps.setdefault(suffix, []).append(name)
    if len(stamps) <= keep:
        return []
    doomed = sorted(stamps)[: len(stamps) - keep]
    return [name for suffix in doomed for name in stamps[suffix]]


# The stamp TimedRotatingFileHandler puts after "<base>." for each `when`, as a
# regex. Written out here rather than edited from the stdlib's private extMatch,
# whose text differs between Python versions (3.13 rewrote it) and which also
# accepts a trailing ".word": a source named "web.log.2099-01-01" (file
# web.log.2099-01-01.log) would pass for a backup of web.log.
_DAY = r"\d{4}-\d{2}-\d{2}"
STAMP_PATTERNS: dict[str, str] = {
    "S": _DAY + r"_\d{2}-\d{2}-\d{2}",  # %Y-%m-%d_%H-%M-%S
    "M": _DAY + r"_\d{2}-\d{2}",  # %Y-%m-%d_%H-%M
    "H": _DAY + r"_\d{2}",  # %Y-%m-%d_%H
    "D": _DAY,  # %Y-%m-%d
    "MIDNIGHT": _DAY,
    **{f"W{day}": _DAY for day in range(7)},
}


def stamp_pattern(when: str) -> re.Pattern[str]:
    """The rotated-name stamp for *when* (any case, as the stdlib accepts it), to fullmatch."""
    try:
        return re.compile(STAMP_PATTERNS[when.upper()], re.ASCII)
    except KeyError:
        raise ValueError(f"invalid rollover interval: {when!r}") from None


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
    """One log file: the stdlib's rotation schedule and names, fed whole batches of bytes.

    Only the write path is ours: lines arrive already formatted and are
    written with ``os.write`` on a descriptor opened with ``O_NOFOLLOW``, one
    call per batch, so the caller learns exactly how many bytes reached the
    file when the disk fills up. Rollover time, rotated names
    (``app.log.2026-11-25``), ``utc`` and ``atTime`` are the stdlib's own
    code; deleting old backups is handed to *background* (off the receive path).
    """

    def __init__(
        self,
        path: str,
        rotation: Rotation,
        background: Background | None,
        root: str | None = None,
        note: Callable[[str, str], None] | None = None,
    ) -> None:
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
        self._background = background
        self._compress = rotation.compress and background is not None
        if self._compress:
            self.namer = _gz_name
        # root is the directory links are followed up to (the operator's --dir);
        # everything below it is opened relative to it without following links.
        self.root = os.path.dirname(self.baseFilename) if root is None else os.path.abspath(root)
        self.subdir, self.leaf = os.path.split(os.path.relpath(self.baseFilename, self.root))
        self._note = note
        self.fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self.stamp = stamp_pattern(self.when)

    def write_batch(self, data: bytes | str, now: float, continuing: bool = False) -> int:
        """Rotate if due at *now*, then append *data*; return the bytes written.

        A failed write raises ``WriteFailed`` carrying the bytes that did reach
        the file, so the caller retries only the rest.
        *continuing* means the file holds the start of a line cut short by an
        earlier failure: no rotation and no newline repair until it is finished.
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        if not continuing and self.due(now):
            self.doRollover()
        fd = self._ensure_open(repair=not continuing)
        written = 0
        view = memoryview(data)
        while written < len(data):
            try:
                written += _os_write(fd, view[written:])
            except OSError as exc:
                raise WriteFailed(written, exc) from exc
        return written

    def due(self, now: float) -> bool:
        """The stdlib's ``shouldRollover`` with the time passed in instead of read from the clock."""
        t = int(now)
        if t < self.rolloverAt:
            return False
        # As the stdlib does (gh-89564): never rotate something that is not a
        # regular file; lstat, so a link is not taken for its target either.
        try:
            mode = os.lstat(self.baseFilename).st_mode
        except FileNotFoundError:
            return True
        if not stat.S_ISREG(mode):
            self.rolloverAt = self.computeRollover(t)
            return False
        return True

    def _ensure_open(self, repair: bool = True) -> int:
        if self.fd is not None:
            return self.fd
        dfd = open_dir(self.root, self.subdir, create=True)
        try:
            try:
                fd = os.open(self.leaf, _FILE_FLAGS, 0o644, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise RefusedFile("symlink", self.baseFilename) from exc
                if exc.errno in (errno.EISDIR, errno.ENXIO):
                    raise RefusedFile("not_a_file", self.baseFilename) from exc
                raise
        finally:
            os.close(dfd)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise RefusedFile("not_a_file", self.baseFilename)
            # A run killed mid-write leaves a cut line: end it before appending,
            # so the next record starts on a line of its own.
            if repair and info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
                _os_write(fd, b"\n")
                if self._note is not None:
                    self._note("repaired_partial_line", self.baseFilename)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._identity = (info.st_dev, info.st_ino)
        return fd

    def replaced(self) -> bool:
        """True if the open file was deleted or renamed under us (it must be reopened)."""
        if self.fd is None or self._identity is None:
            return False
        try:
            info = os.lstat(self.baseFilename)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self._identity

    def close_stream(self) -> None:
        """Close the file but keep the schedule; the next batch opens it again."""
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close the descriptor, then let the stdlib handler close itself."""
        self.close_stream()
        super().close()

    def doRollover(self) -> None:
        """The stdlib's rollover (names, next time) without its directory scan for old backups.

        Listing the directory on every rollover made a midnight with thousands
        of sources quadratic; pruning is queued to the background worker, which
        lists each directory once for all the files that rotated.
        """
        self.close_stream()
        keep, self.backupCount = self.backupCount, 0
        due = self.rolloverAt
        try:
            super().doRollover()
        finally:
            self.backupCount = keep
        if self.rolloverAt == due:
            # Python 3.13's doRollover returns without rotating (and without moving
            # rolloverAt on) when the rotated name exists already; that would make
            # every flush try again. Report it like a failed rename: retried later.
            raise FileExistsError(errno.EEXIST, "the rotated file's name is taken", self.baseFilename)
        if keep > 0 and self._background is not None:
            self._background.prune(self)

    def rotate(self, source: str, dest: str) -> None:
        """Rename within the file's directory, by descriptor, so no link below --dir is followed."""
        dfd = open_dir(self.root, self.subdir, create=False)
        try:
            plain = dest[:-3] if self._compress and dest.endswith(".gz") else dest
            try:
                os.rename(self.leaf, os.path.basename(plain), src_dir_fd=dfd, dst_dir_fd=dfd)
            except FileNotFoundError:
                return  # never created (delay=True), as the stdlib allows
        finally:
            os.close(dfd)
        if self._compress and self._background is not None:
            self._background.compress(self.root, self.subdir, os.path.basename(plain))

    def getFilesToDelete(self) -> list[str]:
        """Backups of *this* file only (see ``backups_to_delete``)."""
        directory = os.path.dirname(self.baseFilename)
        doomed = backups_to_delete(os.listdir(directory), self.leaf, self.stamp, self.backupCount)
        return [os.path.join(directory, name) for name in doomed]


class WriteFailed(OSError):
    """A write that stopped part way: *written* bytes reached the file before *cause*."""

    def __init__(self, written: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.written = written
        self.cause = cause


def _gz_name(name: str) -> str:
    return name + ".gz"


class Background:
    """One worker thread for what must not stall the receive loop: gzip and pruning old backups.

    Both run on the same single thread, in order, so a backup is never
    pruned while it is being compressed. Prune requests are pooled: one pass
    lists each directory once for every file that rotated since the last pass.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zlogcollect-files")
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()
        self._prunes: dict[tuple[str, str, str], tuple[re.Pattern[str], int]] = {}

    def _submit(self, fn: Callable[[], None]) -> None:
        # Called from the rotation thread as well as the receive loop.
        with self._lock:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
            self._pending.append(self._pool.submit(fn))

    def compress(self, root: str, subdir: str, plain: str) -> None:
        """Gzip *plain* (in root/subdir) to *plain*.gz later."""
        self._submit(lambda: _gzip_file(root, subdir, plain))

    def prune(self, handle: RotatingFile) -> None:
        """Note that *handle*'s backups beyond its backupCount are to be deleted at the next ``start_pruning``."""
        with self._lock:
            self._prunes[(handle.root, handle.subdir, handle.leaf)] = (handle.stamp, handle.backupCount)

    def start_pruning(self) -> None:
        """Delete the backups noted so far, in the worker thread: one directory listing for all of them.

        Called when a rotation pass is over, so a midnight of 10,000 rollovers
        lists each directory once instead of once per file.
        """
        with self._lock:
            if not self._prunes:
                return
        self._submit(self._prune_all)

    def _prune_all(self) -> None:
        with self._lock:
            jobs, self._prunes = self._prunes, {}
        by_dir: dict[tuple[str, str], list[tuple[str, re.Pattern[str], int]]] = {}
        for (root, subdir, name), (stamp, keep) in jobs.items():
            by_dir.setdefault((root, subdir), []).append((name, stamp, keep))
        for (root, subdir), files in by_dir.items():
            try:
                dfd = open_dir(root, subdir, create=False)
            except OSError as exc:
                log.error("could not prune backups in %r: %s", os.path.join(root, subdir), exc)
                continue
            try:
                index = _backup_index(os.listdir(dfd))
                for name, stamp, keep in files:
                    for doomed in backups_to_delete(index.get(name, ()), name, stamp, keep):
                        try:
                            os.unlink(doomed, dir_fd=dfd)
                        except FileNotFoundError:
                            pass
            except OSError as exc:
                log.error("could not prune backups in %r: %s", os.path.join(root, subdir), exc)
            finally:
                os.close(dfd)

    def close(self) -> None:
        """Finish every compression and prune that was started."""
        self._pool.shutdown(wait=True)
        for future in self._pending:
            exc = future.exception()
            if exc is not None:
                log.error("could not compress a rotated file: %s", exc)


def _backup_index(names: list[str]) -> dict[str, list[str]]:
    """*names* grouped under each prefix that ends before a dot: one listing serves every file."""
    index: dict[str, list[str]] = {}
    for name in names:
        pos = name.find(".")
        while pos > 0:
            index.setdefault(name[:pos], []).append(name)
            pos = name.find(".", pos + 1)
    return index


def _gzip_file(root: str, subdir: str, plain: str) -> None:
    dfd = open_dir(root, subdir, create=False)
    try:
        src = os.open(plain, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        with (
            open(src, "rb") as source,
            atomic_file(plain + ".gz", dir_fd=dfd) as raw,
            gzip.GzipFile(filename=plain, mode="wb", fileobj=raw) as out,
        ):
            shutil.copyfileobj(source, out, 1024 * 1024)
        os.unlink(plain, dir_fd=dfd)
    finally:
        os.close(dfd)


class FileSink:
    """Formats records, routes them to files under one directory and writes them in batches.

    Every line routed to a file ends up counted in exactly one place:
    ``stats.written[path]`` once it reached the OS, ``stats.dropped[reason]``
    if it had to be given up, or it is still pending in memory (a line cut
    short by a full disk stays pending as the rest of its bytes).
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
        self._background = Background()
        # Renaming and reopening thousands of files at midnight is one rename,
        # stat and open each: seconds on a busy disk. A thread does it, so the
        # receive loop only queues; a rotating file's lines wait in memory.
        self._rotator = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zlogcollect-rotate")
        self._rotating: set[str] = set()
        self._rotated: list[tuple[str, Exception | None]] = []
        self._rotated_lock = threading.Lock()
        self._closing = False
        self._files: dict[str, RotatingFile] = {}
        self._routes: dict[object, tuple[str, ...]] = {}
        self._routes_bytes = 0
        self._known: set[str] = {MALFORMED_FILE, OVERFLOW_FILE}
        self._max_files = max_files
        self._open: OrderedDict[str, None] = OrderedDict()  # least recently written first
        self._pending: dict[str, list[str]] = {}
        self._pending_bytes = 0
        self._fresh_bytes = 0  # queued since the last flush: what triggers an early one
        # The unwritten end of a line the disk cut short, per file: it goes out
        # first, so the line is completed in place instead of written twice.
        self._carry: dict[str, bytes] = {}
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._last_complaint: dict[str, float] = {}
        self._refused: set[str] = set()

    @property
    def pending_lines(self) -> int:
        """Lines accepted but not yet (completely) written."""
        return sum(len(lines) for lines in self._pending.values()) + len(self._carry)

    def write(self, record: Record) -> None:
        """Queue *record* for every file its routes name; flush early if the batch is large."""
        # Routes depend only on the topic (source, level, subtopic), plus host and
        # pid when a template uses them, so each distinct key is routed once; the
        # cache starts over when it is full, by entries or by bytes (a peer may
        # send long distinct topics).
        key = record.topic if self._router.per_topic else self._router.cache_key(record)
        paths = self._routes.get(key)
        if paths is None:
            paths = tuple(self._admit(path) for path in self._router.route(record))
            size = len(record.topic) + sum(len(path) for path in paths) + 64
            if len(self._routes) >= 10_000 or self._routes_bytes + size > _ROUTE_CACHE_BYTES:
                self._routes.clear()
                self._routes_bytes = 0
            if size <= _ROUTE_CACHE_BYTES // 16:
                self._routes[key] = paths
                self._routes_bytes += size
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
                    "more than %d files: records for %r and other new files go to %s",
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
        """Write every pending batch; on failure keep what did not reach the file and retry with backoff.

        A file that failed is retried after 0.5 s, then after doubling delays up
        to 10 s (every flush with *force*), so a full disk costs the receive loop
        one attempt per file per delay instead of one per batch. What reached
        the file before the failure is counted written and never sent again.
        """
        now = self._clock()
        self._fresh_bytes = 0
        if self._rotated:
            self._collect_rotations(now)
        paths = list(self._pending)
        paths += [path for path in self._carry if path not in self._pending]
        due: list[tuple[str, RotatingFile]] = []
        for path in paths:
            lines = self._pending.get(path, [])
            carry = self._carry.get(path, b"")
            if not lines and not carry:
                self._pending.pop(path, None)
                continue
            if path in self._rotating or (not force and self._retry_at.get(path, 0.0) > now):
                continue
            handle = self._files.get(path)
            if handle is not None and not carry and not self._closing and int(now) >= handle.rolloverAt:
                self._rotating.add(path)
                due.append((path, handle))
                continue
            data = carry + "".join(lines).encode("utf-8", "backslashreplace")
            error: OSError | None = None
            try:
                written = self._write(path, data, now, continuing=bool(carry))
            except RefusedFile as exc:
                self._refuse(path, exc, len(lines) + bool(carry))
                continue
            except WriteFailed as exc:
                written, error = exc.written, exc.cause
            except OSError as exc:
                written, error = 0, exc
            self._settle(path, lines, carry, written, error is None)
            if error is None:
                if path in self._retry_at:
                    del self._retry_at[path]
                    del self._backoff[path]
                    log.info("%r is writable again", os.path.join(self.directory, path))
                continue
            self._stats.errors["disk_error"] += 1
            self._complain(path, error, now)
            delay = min(self._backoff.get(path, 0.25) * 2, 10.0)
            self._backoff[path] = delay
            self._retry_at[path] = now + delay
            if path in self._files and path not in self._carry:
                # Reopened next time (and checked for a cut line); with a carry the
                # descriptor stays, so the line is finished in the same file.
                self._files[path].close_stream()
                self._open.pop(path, None)
        if due:
            # One job for the whole pass: the thread starts once the loop is done with it.
            self._rotator.submit(self._rotate, due, now)
        if self._pending_bytes > self._max_pending:
            self._shed()

    def _rotate(self, due: list[tuple[str, RotatingFile]], now: float) -> None:
        """In the rotation thread: roll each file over and open its new file; report back."""
        # Opening the new files here saves the receive loop the work, but only
        # up to a share of max_open_files: descriptors are a shared budget.
        budget = self._max_open // 2
        for path, handle in due:
            error: Exception | None = None
            try:
                if handle.due(now):  # checks it is still a regular file
                    handle.doRollover()
                    if budget > 0:
                        budget -= 1
                        try:
                            handle._ensure_open()
                        except OSError:
                            pass  # the next write opens it again and counts what fails
            except Exception as exc:  # noqa: BLE001 - reported to the receive loop, which counts it
                error = exc
            with self._rotated_lock:
                self._rotated.append((path, error))

    def _collect_rotations(self, now: float) -> None:
        """Take back the files the rotation thread is done with; a failed one is retried with backoff."""
        with self._rotated_lock:
            done, self._rotated = self._rotated, []
        for path, error in done:
            self._rotating.discard(path)
            if self._files[path].fd is not None:
                self._track_open(path)  # opened by the rotation thread: under the LRU cap now
            if error is None:
                continue
            # Keep writing to the current file and try the rotation again in a
            # minute: lines must not wait in memory on a rename that keeps failing.
            self._stats.errors["rotate_error"] += 1
            self._complain(path, error, now)
            self._files[path].rolloverAt = int(now) + 60
        if not self._rotating:
            self._background.start_pruning()

    def _write(self, path: str, data: bytes, now: float, continuing: bool) -> int:
        handle = self._file(path)
        # While a cut line is being finished the old descriptor is kept even if
        # the file was renamed (logrotate): its end belongs with its start.
        if not continuing and handle.replaced():
            log.warning("%r was removed or replaced; reopening it", handle.baseFilename)
            self._stats.errors["reopened"] += 1
            handle.close_stream()
        try:
            return handle.write_batch(data, now, continuing)
        except WriteFailed:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # Out of descriptors: give back idle files, then try once more; if
            # that fails too it is a disk error like any other (kept, retried).
            self._stats.errors["too_many_open_files"] += 1
            self._close_idle(path)
            return handle.write_batch(data, now, continuing)

    def _close_idle(self, keep: str) -> None:
        """Close the least recently written half of the open files (never *keep*)."""
        victims = [path for path in self._open if path != keep][: max(1, len(self._open) // 2)]
        for path in victims:
            self._files[path].close_stream()
            del self._open[path]

    def _settle(self, path: str, lines: list[str], carry: bytes, written: int, complete: bool) -> None:
        """Count what reached the file; keep the rest (and the end of a cut line) pending."""
        if carry:
            if written < len(carry):
                self._carry[path] = carry[written:]
                return
            written -= len(carry)
            del self._carry[path]
            self._stats.written[path] += 1
        done = cut = 0
        if complete:
            done = len(lines)
        else:
            for line in lines:
                encoded = line.encode("utf-8", "backslashreplace")
                if written < len(encoded):
                    if written:
                        self._carry[path] = encoded[written:]
                        cut = 1
                    break
                written -= len(encoded)
                done += 1
        self._stats.written[path] += done
        if done + cut:
            self._pending_bytes -= sum(len(line) for line in lines[: done + cut])
            del lines[: done + cut]
        if not lines:
            self._pending.pop(path, None)

    def _refuse(self, path: str, exc: RefusedFile, count: int) -> None:
        """Drop (and count) the lines for a file that must not be written; say so once per file."""
        self._stats.dropped[exc.reason] += count
        self._pending_bytes -= sum(len(line) for line in self._pending.pop(path, ()))
        self._carry.pop(path, None)
        if path not in self._refused:
            self._refused.add(path)
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
        stuck = [path for path in self._pending if path in self._retry_at] or list(self._pending)
        for path in stuck:
            lines = self._pending[path]
            dropped = 0
            while dropped < len(lines) and self._pending_bytes > self._max_pending:
                self._pending_bytes -= len(lines[dropped])
                dropped += 1
            del lines[:dropped]
            self._stats.dropped["disk_error"] += dropped

    def _complain(self, path: str, exc: Exception, now: float) -> None:
        # One line per file every 10 s: a full disk must not flood stderr.
        if now - self._last_complaint.get(path, 0.0) >= 10.0:
            self._last_complaint[path] = now
            kind = "disk full" if getattr(exc, "errno", None) == errno.ENOSPC else "write failed"
            log.error(
                "%s for %r: %s; keeping %d pending lines in memory and retrying",
                kind,
                os.path.join(self.directory, path),
                getattr(exc, "strerror", None) or exc,
                len(self._pending.get(path, ())) + (path in self._carry),
            )

    def _file(self, path: str) -> RotatingFile:
        handle = self._files.get(path)
        if handle is None:
            full = os.path.join(self.directory, path)
            handle = self._files[path] = RotatingFile(
                full, self._rotation, self._background, root=self.directory, note=self._note
            )
        self._track_open(path)
        return handle

    def _track_open(self, path: str) -> None:
        """Mark *path* most recently used; close the least recently written file past max_open_files."""
        self._open[path] = None
        self._open.move_to_end(path)
        if len(self._open) > self._max_open:
            # The least recently written file that the rotation thread is not holding.
            oldest = next((p for p in self._open if p not in self._rotating), path)
            del self._open[oldest]
            self._files[oldest].close_stream()

    def reopen(self) -> None:
        """Flush, then close every file so the next write opens it afresh (after logrotate)."""
        self.flush(force=True)
        for path, handle in self._files.items():
            # A cut line is finished in its own file first; a rotating file is reopened anyway.
            if path not in self._carry and path not in self._rotating:
                handle.close_stream()
                self._open.pop(path, None)

    def close(self) -> None:
        """Finish rotations, flush what can be written, close every file and finish compression and pruning."""
        self._rotator.shutdown(wait=True)
        self._closing = True  # from here on a due file is rotated in line
        self.flush(force=True)
        for handle in self._files.values():
            handle.close()
        self._open.clear()
        self._background.start_pruning()
        self._background.close()
        if self._pending_bytes or self._carry:
            for lines in self._pending.values():
                self._stats.dropped["disk_error"] += len(lines)
            self._stats.dropped["disk_error"] += len(self._carry)
            self._pending.clear()
            self._carry.clear()
            self._pending_bytes = 0
