"""Rotating log files (the stdlib's schedule and names, written by descriptor, never through a link):
rollovers, pruning and compression run on threads, off the receive path."""

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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from zlogcollect.helpers import atomic_file
from zlogcollect.privileges import DIR_MODE, FILE_MODE

K = TypeVar("K")

log = logging.getLogger(__name__)

# Read-write so the last byte can be checked on open (a file cut mid-line by a
# SIGKILL gets its newline back); never through a link planted in --dir.
_FILE_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_os_write = os.write  # one name the unit tests can replace to simulate a full disk


def create_or_open(name: str, dir_fd: int, mode: int) -> int:
    """Open *name* in *dir_fd* for appending (never through a link): a file made now gets *mode*
    exactly, whatever the umask; one that exists keeps the mode it has (the operator's)."""
    for _ in range(3):
        try:
            fd = os.open(name, _FILE_FLAGS | os.O_EXCL, mode, dir_fd=dir_fd)
        except FileExistsError:  # a link in its place too: O_EXCL never follows one
            try:
                return os.open(name, _FILE_FLAGS & ~os.O_CREAT, dir_fd=dir_fd)
            except FileNotFoundError:
                continue  # removed in between: create it after all
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        return fd
    return os.open(name, _FILE_FLAGS, mode, dir_fd=dir_fd)


class RefusedFile(OSError):
    """A path in --dir that must not be written: a symbolic link, or not a regular file."""

    def __init__(self, reason: str, path: str) -> None:
        super().__init__(errno.ELOOP if reason == "symlink" else errno.EINVAL, reason, path)
        self.reason = reason


def open_dir(root: str, subdir: str, create: bool, mode: int = DIR_MODE) -> int:
    """A descriptor for *root*/*subdir*, creating missing parts (with *mode* exactly, whatever the
    umask), never following a link below *root*."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in subdir.split(os.sep) if subdir else ():
            if part in ("", "."):
                continue
            made = False
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                    made = True
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
            if made:
                os.fchmod(fd, mode)  # mkdir's mode went through the umask; ours is the setting
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
    file_mode: int = FILE_MODE
    """Mode of the files created (the live file, rotated names keep it, the .gz), whatever the umask."""
    dir_mode: int = DIR_MODE
    """Mode of the directories created below the root (route templates with ``/``)."""


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
        self._file_mode = rotation.file_mode
        self._dir_mode = rotation.dir_mode

    def write_batch(self, data: bytes | str, now: float, continuing: bool = False) -> int:
        """Rotate if due at *now*, then append *data*; return the bytes written.

        A failed write raises ``WriteFailed`` carrying the bytes that did reach
        the file, so the caller retries only the rest.
        *continuing* means the file holds the start of a line cut short by an
        earlier failure: no rotation and no newline repair until it is finished.
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "backslashreplace")
        fd = self.prepare(now, continuing)
        written = 0
        view = memoryview(data)
        while written < len(data):
            try:
                written += _os_write(fd, view[written:])
            except OSError as exc:
                raise WriteFailed(written, exc) from exc
        return written

    def prepare(self, now: float, continuing: bool = False) -> int:
        """Rotate if due at *now* (not while *continuing* a cut line), then the open descriptor."""
        if not continuing and self.due(now):
            self.doRollover()
        return self.ensure_open(repair=not continuing)

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

    def ensure_open(self, repair: bool = True) -> int:
        """The open descriptor, opening the file first if needed (below --dir, never through a link)."""
        if self.fd is not None:
            return self.fd
        dfd = open_dir(self.root, self.subdir, create=True, mode=self._dir_mode)
        try:
            try:
                fd = create_or_open(self.leaf, dfd, self._file_mode)
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

    def rotate(self, source: str, dest: str) -> None:  # noqa: ARG002 - logging's signature; source is always self.leaf
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
            self._background.compress(self.root, self.subdir, os.path.basename(plain), self._file_mode)

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

    def compress(self, root: str, subdir: str, plain: str, mode: int = FILE_MODE) -> None:
        """Gzip *plain* (in root/subdir) to *plain*.gz (created with *mode*) later."""
        self._submit(lambda: _gzip_file(root, subdir, plain, mode))

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


class Rotator(Generic[K]):
    """One thread that rolls files over, so thousands of renames at midnight never stall the receive loop.

    The loop hands over the files that are due, each with its key (their lines
    wait in memory), and takes the keys back, with any error, at its next flush.
    """

    def __init__(self, open_budget: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zlogcollect-rotate")
        self._open_budget = open_budget
        self._done: list[tuple[K, Exception | None]] = []
        self._lock = threading.Lock()
        self.running = 0  # files handed over and not taken back

    def submit(self, due: list[tuple[K, RotatingFile]], now: float) -> None:
        """Roll *due* over in the thread (one job for the whole pass)."""
        self.running += len(due)
        self._pool.submit(self._rotate, due, now)

    def _rotate(self, due: list[tuple[K, RotatingFile]], now: float) -> None:
        # Opening the new files here saves the receive loop the work, but only
        # up to a share of max_open_files: descriptors are a shared budget.
        budget = self._open_budget
        for key, handle in due:
            error: Exception | None = None
            try:
                if handle.due(now):  # checks it is still a regular file
                    handle.doRollover()
                    if budget > 0:
                        budget -= 1
                        try:
                            handle.ensure_open()
                        except OSError:
                            pass  # the next write opens it again and counts what fails
            except Exception as exc:  # noqa: BLE001 - reported to the receive loop, which counts it
                error = exc
            with self._lock:
                self._done.append((key, error))

    def collect(self) -> list[tuple[K, Exception | None]]:
        """The keys of the files the thread is done with since the last call, and what went wrong with each."""
        if not self._done:
            return []
        with self._lock:
            done, self._done = self._done, []
        self.running -= len(done)
        return done

    def shutdown(self) -> None:
        """Wait for the rotations handed over so far."""
        self._pool.shutdown(wait=True)


def _backup_index(names: list[str]) -> dict[str, list[str]]:
    """*names* grouped under each prefix that ends before a dot: one listing serves every file."""
    index: dict[str, list[str]] = {}
    for name in names:
        pos = name.find(".")
        while pos > 0:
            index.setdefault(name[:pos], []).append(name)
            pos = name.find(".", pos + 1)
    return index


def _gzip_file(root: str, subdir: str, plain: str, mode: int) -> None:
    dfd = open_dir(root, subdir, create=False)
    try:
        src = os.open(plain, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        with (
            open(src, "rb") as source,
            atomic_file(plain + ".gz", dir_fd=dfd, mode=mode) as raw,
            gzip.GzipFile(filename=plain, mode="wb", fileobj=raw) as out,
        ):
            shutil.copyfileobj(source, out, 1024 * 1024)
        os.unlink(plain, dir_fd=dfd)
    finally:
        os.close(dfd)
