"""The inputs of `zlogcollect ship`: files (followed like ``tail -F``), named pipes and stdin.

Each :class:`Input` runs in a reader thread and hands :class:`Batch` es of
lines to the sender through the bounded :class:`Outbox` (so a slow collector
stops the reading, not the memory). No sockets here: plain files, ``os.read``
and threads.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from zlogcollect.lines import Line, LineSplitter

__all__ = ["CHUNK", "POLL", "Batch", "Done", "Failed", "Input", "Item", "Outbox", "read_all"]

CHUNK: Final = 64 * 1024  # bytes read at a time
POLL: Final = 0.1  # seconds between looks at a followed file that has no new data
QUEUE_BATCHES: Final = 16  # batches between the readers and the sender (each at most CHUNK of input)


@dataclass
class Batch:
    """Lines of one input, the first of them line *first* of its file."""

    name: str
    lines: list[Line]
    first: int


@dataclass
class Done:
    """A reader finished (its inputs ended)."""


@dataclass
class Failed:
    """A reader could not go on: one line for stderr."""

    message: str


Item = Batch | Done | Failed


@dataclass
class Outbox:
    """The readers' bounded queue to the sender, and the stop every reader watches."""

    items: queue.Queue[Item] = field(default_factory=lambda: queue.Queue(QUEUE_BATCHES))
    stop: threading.Event = field(default_factory=threading.Event)

    def put(self, item: Item) -> bool:
        """Queue *item*, waiting for room; False once the sender stopped."""
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


class Input:
    """One input: a file (followed or not), a named pipe, or stdin (*path* None)."""

    def __init__(
        self,
        path: str | None,
        limit: int,
        follow: bool = False,
        from_end: bool = False,
        say: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.path = path
        # The name travels as the records' `path`: as text, whatever bytes the file name has.
        self.name = "<stdin>" if path is None else os.fsencode(path).decode("utf-8", "backslashreplace")
        self.follow = follow
        self.from_end = from_end
        self.splitter = LineSplitter(limit)
        self.lineno = 0  # lines handed over from the current file
        self._say = say

    def _emit(self, out: Outbox, lines: list[Line]) -> bool:
        if not lines:
            return not out.stop.is_set()
        first = self.lineno + 1
        self.lineno += len(lines)
        return out.put(Batch(self.name, lines, first))

    def _finish(self, out: Outbox) -> bool:
        last = self.splitter.finish()
        return self._emit(out, [last] if last is not None else [])

    def _read_to_end(self, fd: int, out: Outbox) -> int | None:
        """Read *fd* until end of file; return the bytes read, or None when the sender stopped."""
        total = 0
        while True:
            data = os.read(fd, CHUNK)
            if not data:
                return total
            total += len(data)
            if not self._emit(out, self.splitter.feed(data)):
                return None

    def run(self, out: Outbox) -> None:
        """Read every line and hand it to *out*; for a pipe or a followed file, until stopped."""
        if self.path is None:
            fd = sys.stdin.fileno()
            if self._read_to_end(fd, out) is not None:
                self._finish(out)
            return
        if stat.S_ISFIFO(os.stat(self.path).st_mode):
            self._pipe(out)
        elif self.follow:
            self._follow(out)
        else:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if self._read_to_end(fd, out) is not None:
                    self._finish(out)
            finally:
                os.close(fd)

    def _pipe(self, out: Outbox) -> None:
        """A named pipe: read each writer to its end, then wait for the next one (until stopped)."""
        assert self.path is not None
        while not out.stop.is_set():
            fd = os.open(self.path, os.O_RDONLY)  # waits for a writer
            try:
                if self._read_to_end(fd, out) is None or not self._finish(out):
                    return
            finally:
                os.close(fd)

    def _follow(self, out: Outbox) -> None:
        """Like ``tail -F``: read on as the file grows, from the start after truncation, the new file after rotation."""
        assert self.path is not None
        path = self.path
        first = os.open(path, os.O_RDONLY)
        position = os.lseek(first, 0, os.SEEK_END) if self.from_end else 0
        fd: int | None = first
        try:
            while not out.stop.is_set():
                if fd is None:  # replaced, and the new file is not there yet
                    try:
                        fd = os.open(path, os.O_RDONLY)
                    except OSError:  # not there yet, or not readable yet (a rotation's chmod to come)
                        out.stop.wait(POLL)
                        continue
                    position = 0
                got = self._read_to_end(fd, out)
                if got is None:
                    return
                position += got
                if got:
                    continue
                out.stop.wait(POLL)
                now = os.fstat(fd)
                if now.st_size < position:
                    self._say(f"{path}: file truncated, reading it from the start")
                    self.splitter.reset()
                    os.lseek(fd, 0, os.SEEK_SET)
                    position = 0
                    self.lineno = 0
                    continue
                try:
                    current = os.stat(path)
                except OSError:
                    continue  # renamed away, not recreated yet: the old file may still grow
                if (current.st_ino, current.st_dev) != (now.st_ino, now.st_dev):
                    # Rotated: what was written to the old file before the switch first.
                    if self._read_to_end(fd, out) is None or not self._finish(out):
                        return
                    os.close(fd)
                    fd = None
                    self.lineno = 0
                    self._say(f"{path}: file replaced, following the new file")
        finally:
            if fd is not None:
                os.close(fd)


def read_all(inputs: Sequence[Input], out: Outbox) -> None:
    """Thread body: read *inputs* in turn (or one followed input), then report done or failed."""
    item: Item = Done()
    try:
        for source in inputs:
            source.run(out)
            if out.stop.is_set():
                return
    except OSError as exc:
        item = Failed(f"{exc.filename or 'input'}: {exc.strerror or exc}")
    except (ValueError, AttributeError) as exc:  # stdin closed or absent
        item = Failed(f"input: cannot be read ({exc})")
    out.put(item)
