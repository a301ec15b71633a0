"""The per-publisher loss ledger: sequence gaps, the warnings about them, and the state kept between runs."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable

from zlogcollect.helpers import JSON_ENCODER, Throttle, atomic_write
from zlogcollect.seqtrack import Outcome, SeqTracker, valid_gaps
from zlogcollect.stats import MAX_PUBLISHERS, Stats, publisher_entry
from zlogcollect.wire import SequenceMark, escape_text, sequence_mark
from zlogcollect.writeahead import PlannedWrite, records_written, writes_complete

log = logging.getLogger(__name__)

WARN_BURST = 10
"""Loss warnings printed per WARN_PERIOD; the rest are counted and summarised."""
WARN_PERIOD = 10.0
LOSS_GRACE = 1.0
"""Seconds a gap stays open before it is warned about: a handler's replay fills most within milliseconds."""
STATE_VERSION = 2
"""2: entries may carry ``gaps`` and ``start``, and the file its journal ``generation`` (1 still loads)."""
MAX_JOURNAL_BYTES = 64 * 1024 * 1024
"""Past this size (saves failing for long) the journal stops growing; the next save starts it over."""

Entry = dict[str, object]


class LossLedger:
    """Per-publisher sequence numbers turned into loss, the warnings about it, and its saved state.

    What the saved state says: every entry is a seq whose line (and all before
    it) is on disk. Publishers first seen since the last save are registered at
    their first seq minus one, so a run killed before it wrote their lines is
    not mistaken by the next one for a collector that never saw them (which
    would call the missing records "unseen before start" instead of lost).
    """

    def __init__(
        self,
        stats: Stats,
        throttle: Throttle | None = None,
        grace: float = LOSS_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """*grace*: seconds a gap must stay open before :meth:`report` warns about it (on *clock*)."""
        self.stats = stats
        self._publishers = stats.publishers
        self.fresh: dict[str, Entry] = {}
        """Publishers first seen since the last save, at their first seq minus one (cleared in place)."""
        self.saved: dict[str, Entry] = {}
        """What the last save wrote (or the state loaded at start)."""
        self.dirty = False
        """A sequence number moved since the last complete save."""
        self.generation = 0
        """The state file's generation: a journal whose header names another one is stale."""
        self.touched: set[str] = set()
        """Publishers whose sequence state moved since the last journal line or complete save."""
        self._snapshot: dict[str, Entry] = {}
        self._unreported: dict[str, _Pending] = {}
        self._throttle = throttle if throttle is not None else Throttle(WARN_BURST, WARN_PERIOD)
        self._grace = grace
        self._clock = clock

    def observe_meta(self, publisher: str, seq: int, meta: dict[str, object], now: float) -> bool:
        """A record's checked extension (pub, seq, dropped, host, pid): the hot path.

        False if the record is a duplicate (its seq was already written): the caller drops it.
        """
        loss = self._publishers.get(publisher)
        if loss is not None:
            track = loss.track
            if seq == track.last + 1 and "dropped" not in meta:
                # The usual case, the next record of a known publisher: nothing missing, nothing announced.
                track.last = seq
                loss.seen = now
                self.dirty = True
                self.touched.add(publisher)
                return True
        dropped = meta.get("dropped", 0)
        host = meta.get("host")
        pid = meta.get("pid")
        host_text = host if isinstance(host, str) else "?"
        pid_number = pid if isinstance(pid, int) else None
        if publisher not in self.stats.publishers:
            self._register(publisher, host_text, pid_number, seq, now)
        outcome, missing = self.stats.observe_sequence(
            publisher, host_text, pid_number, seq, dropped if isinstance(dropped, int) else 0, now
        )
        if outcome is Outcome.DUPLICATE:
            return False
        self.dirty = True
        self._touch(publisher)
        if missing:
            mark = sequence_mark(meta)
            if mark is not None:  # always, for a checked extension
                self._note_loss(mark, missing)
        elif outcome is Outcome.FILLED:
            self._note_filled(publisher)
        return True

    def observe(self, mark: SequenceMark, now: float) -> bool:
        """A quarantined record's sequence number: quarantined is not lost, so it is no gap.

        False if it is a duplicate (already quarantined once): the caller drops it.
        """
        if mark.publisher not in self.stats.publishers:
            self._register(mark.publisher, mark.host, mark.pid, mark.seq, now)
        outcome, missing = self.stats.observe_sequence(
            mark.publisher, mark.host, mark.pid, mark.seq, mark.dropped, now
        )
        if outcome is Outcome.DUPLICATE:
            return False
        self.dirty = True
        self._touch(mark.publisher)
        if missing:
            self._note_loss(mark, missing)
        elif outcome is Outcome.FILLED:
            self._note_filled(mark.publisher)
        return True

    def _touch(self, publisher: str) -> None:
        """Mark *publisher* for the next journal line (the slow path: publishers come and go here)."""
        touched = self.touched
        touched.add(publisher)
        if len(touched) > 2 * MAX_PUBLISHERS:
            # Lines pending for long (a full disk) while peers invent publishers: keep the known ones.
            touched.intersection_update(self._publishers)

    def _register(self, publisher: str, host: str, pid: int | None, seq: int, now: float) -> None:
        if len(self.fresh) < MAX_PUBLISHERS:
            entry: Entry = {"host": host, "pid": pid, "seq": seq - 1, "seen": now}
            if seq > 0:
                # Nothing of it written yet: the records before its first one stay open to a replay.
                entry["gaps"] = [[0, seq - 1]]
                entry["start"] = seq
            self.fresh[publisher] = entry

    def _note_loss(self, mark: SequenceMark, missing: int) -> None:
        # The mark is kept too: the stats may forget this publisher before the report.
        previous = self._unreported.get(mark.publisher)
        if previous is None:
            if len(self._unreported) >= MAX_PUBLISHERS:
                self._throttle.hold("loss", missing)  # only in the summary line: memory stays bounded
                return
            self._unreported[mark.publisher] = _Pending(missing, mark, self._clock())
        else:
            previous.count += missing
            previous.mark = mark

    def _note_filled(self, publisher: str) -> None:
        """A record counted missing arrived after all: not to be warned about if not yet reported."""
        pending = self._unreported.get(publisher)
        if pending is not None:
            pending.count -= 1
            if pending.count <= 0:
                del self._unreported[publisher]

    def report(self, final: bool = False) -> None:
        """A warning per publisher that lost records since the last report, once the first of them
        has been missing for the grace period (a replay fills most gaps at once), at most
        WARN_BURST every WARN_PERIOD s; the rest are summed up in one line. *final*: all of them now."""
        throttle = self._throttle
        due = self._clock() - self._grace
        reported: list[str] = []
        waiting = False
        for publisher, pending in self._unreported.items():
            if not final and pending.since > due:
                waiting = True
                continue
            count, mark = pending.count, pending.mark
            reported.append(publisher)
            if not throttle.allow("loss", count):
                continue
            loss = self.stats.publishers.get(publisher)
            log.warning(
                "lost %d records from host %s pid %s (publisher %s), %s",
                count,
                escape_text(mark.host, 255),
                "?" if mark.pid is None else mark.pid,
                publisher,  # a checked token: [A-Za-z0-9_.:-]{1,64}
                f"{loss.gaps} in all, {loss.announced} of them dropped by the sender"
                if loss is not None
                else "no longer tracked",
            )
        for publisher in reported:
            del self._unreported[publisher]
        if waiting and not final:
            return  # the summary line waits for them: one line for all that were held
        publishers, records = throttle.held("loss", final)
        if publishers:
            log.warning(
                "... and %d more publishers lost records (%d records; the counters line has the total)",
                publishers,
                records,
            )

    def to_json(self, complete: bool = True) -> str:
        """The state to save: each publisher's last seq if every line is on disk (*complete*),
        else the last saved state plus the publishers first seen since. :meth:`commit` once written."""
        self._snapshot = self.stats.publisher_state() if complete else {**self.saved, **self.fresh}
        return JSON_ENCODER.encode(
            {"version": STATE_VERSION, "generation": self.generation, "publishers": self._snapshot}
        )

    def commit(self, complete: bool = True) -> None:
        """The text of the last :meth:`to_json` is safely saved."""
        self.saved = self._snapshot
        self.fresh.clear()
        if complete:
            self.dirty = False
            self.touched.clear()

    def journal_line(self, files: list[PlannedWrite] | None = None) -> str:
        """The state of every publisher touched since the last journal line or complete save, as one
        JSON line (``{"publishers": {...}}``, the entries of the state file; see :class:`StateFile`),
        or "". Call only with every accepted line on disk; clear :attr:`touched` once it is appended.

        With *files* it is a write-ahead entry instead (``"files"`` added): the state once the
        planned writes are done, called with every accepted line in the plan; it holds only if
        it is the journal's last entry and the files show every write complete."""
        publishers = self._publishers
        entries = {}
        for name in self.touched:
            loss = publishers.get(name)
            if loss is not None:
                entries[name] = publisher_entry(loss)
        if not entries:
            return ""
        line = {"publishers": entries} if files is None else {"publishers": entries, "files": files}
        return JSON_ENCODER.encode(line) + "\n"

    def apply_journal(
        self,
        text: str,
        now: float,
        verify: Callable[[object], bool | dict[str, list[int]] | None] = lambda _plan: None,
    ) -> int | None:
        """Replay a journal over the state loaded from :meth:`from_json`: the last entry per publisher
        wins. None if it belongs to another generation of the state file (a journal the file already
        holds); else how many publishers it restored. A cut or bad line is skipped and counted
        (``errors=bad_journal_line``): a collector killed while appending leaves one at the end.

        A write-ahead entry (one with ``"files"``) counts only if it is the last whole entry,
        as *verify* (given its files) finds them: True, every planned write is complete (the run
        was killed after writing the batch and before its journal line): the entry holds; False,
        none is: it is void; a dict, the batch was cut short and these seqs (per publisher) are
        whole in the files: each publisher moves on from its state before the batch by exactly
        those; None, the files cannot tell: counted (``errors=interrupted_batch``), and the
        batch's records, replayed, are written again to the files that had them."""
        head, _, body = text.partition("\n")
        try:
            header = json.loads(head)
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict) or header.get("generation") != self.generation:
            return None
        entries: dict[str, object] = {}
        batches, bad = _journal_entries(body)
        ahead: dict[str, object] | None = None
        for batch in batches:
            if "files" in batch:
                ahead = batch  # a later whole entry supersedes it
                continue
            ahead = None
            _later_wins(entries, batch["publishers"])
        if ahead is not None:
            verdict = verify(ahead["files"])
            if verdict is True:
                _later_wins(entries, ahead["publishers"])
            elif isinstance(verdict, dict):
                _later_wins(entries, self._partly_written(entries, ahead["publishers"], verdict))
            elif verdict is None:
                self.stats.errors["interrupted_batch"] += 1
        if bad:
            self.stats.errors["bad_journal_line"] += bad
        count = self.stats.restore_publishers(entries, now)
        self.saved = self.stats.publisher_state()
        return count

    def _partly_written(
        self, entries: dict[str, object], after: object, written: dict[str, list[int]]
    ) -> dict[str, object]:
        """The entries of the publishers a cut batch wrote some records of: each one's state before
        the batch (the journal's, the state file's, or new) moved on by exactly the *written* seqs,
        so the rest of the batch stays open to a replay (and the seqs skipped are gaps)."""
        moved: dict[str, object] = {}
        if not isinstance(after, dict):
            return moved
        for name, seqs in written.items():
            entry = after.get(name)
            if not isinstance(entry, dict):
                continue
            base = entries.get(name)
            if base is None:
                loss = self.stats.publishers.get(name)
                base = publisher_entry(loss) if loss is not None else _first_seen(entry)
            if not isinstance(base, dict) or (
                "pid" in base and (base.get("pid"), base.get("host")) != (entry.get("pid"), entry.get("host"))
            ):
                # The publisher restarted in the batch (a new pid counting from 0): its state
                # before the batch says nothing of the new numbers. Left as it was (written again).
                continue
            track = _tracker(base)
            if track is None:
                continue  # of the wrong shape: left as before the batch (written again if replayed)
            _advance(track, seqs)
            moved[name] = {**entry, "seq": track.last, "gaps": track.gaps, "start": track.start}
        return moved

    def from_json(self, text: str, now: float) -> int:
        """Resume from a previous run's :meth:`to_json`; return how many publishers were restored.

        Entries of the wrong shape are skipped and counted (``errors=bad_state_entry``);
        a text that is not such a state at all raises ValueError.
        """
        try:
            state = json.loads(text)
        except RecursionError as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(state, dict):
            raise ValueError(f"it holds {type(state).__name__}, not an object")
        count = self.stats.restore_publishers(state.get("publishers"), now)
        generation = state.get("generation", 0)
        self.generation = generation if generation.__class__ is int else 0
        self.saved = self.stats.publisher_state()
        return count


def _journal_entries(body: str) -> tuple[list[dict[str, object]], int]:
    """The journal's whole entries (objects with a ``publishers`` object), and how many lines were not."""
    batches: list[dict[str, object]] = []
    bad = 0
    for line in body.split("\n"):
        if not line:
            continue
        try:
            batch = json.loads(line)
        except (ValueError, RecursionError):
            batch = None
        if isinstance(batch, dict) and isinstance(batch.get("publishers"), dict):
            batches.append(batch)
        else:
            bad += 1
    return batches, bad


def _first_seen(entry: dict[str, object]) -> Entry:
    """A publisher no state knew before the batch: as :meth:`LossLedger._register` sees it first."""
    start = entry.get("start", 0)
    start = start if start.__class__ is int and start > 0 else 0
    return {"seq": start - 1, "gaps": [[0, start - 1]] if start else [], "start": start}


def _advance(track: SeqTracker, seqs: list[int]) -> None:
    """Observe *seqs* (ascending) on *track* while it can keep every record it skips open as a
    gap: at the cap (:data:`MAX_GAPS`) it would give the lowest up, and a record given up is one
    a replay would be refused for although it is not on disk. Stops before that (claiming less
    is always safe: what is not claimed is written again)."""
    for seq in seqs:
        before = (track.last, [gap[:] for gap in track.gaps], track.floor, track.given_up)
        track.observe(seq)
        if track.given_up != before[3]:
            track.last, track.gaps, track.floor, track.given_up = before
            return


def _tracker(entry: object) -> SeqTracker | None:
    """A tracker at *entry*'s state (seq, gaps, start), or None if they are of the wrong shape."""
    if not isinstance(entry, dict):
        return None
    seq, start = entry.get("seq"), entry.get("start", 0)
    if seq.__class__ is not int or start.__class__ is not int:
        return None
    gaps = valid_gaps(entry.get("gaps", []), seq)
    return None if gaps is None else SeqTracker(seq, gaps, start)


def _later_wins(entries: dict[str, object], publishers: object) -> None:
    """Put *publishers*' entries last in *entries*, replacing earlier ones of the same names."""
    assert isinstance(publishers, dict)
    for name, entry in publishers.items():
        entries.pop(name, None)
        entries[name] = entry


class Untracked(set[str]):
    """:attr:`LossLedger.touched` without a state file (the bridge): nothing to journal, nothing kept."""

    def add(self, element: str) -> None:
        """Keep nothing."""


class _Pending:
    """Records a publisher lost that are not reported yet, and since when the first of them is missing."""

    __slots__ = ("count", "mark", "since")

    def __init__(self, count: int, mark: SequenceMark, since: float) -> None:
        self.count = count
        self.mark = mark
        self.since = since


class StateFile:
    """Where the ledger is kept between runs (collect mode: ``_publishers.json`` in --dir), and its journal.

    The journal (``_publishers.journal`` beside it) is appended right after every
    batch of lines is written: one JSON line holding the entries of the
    publishers whose state moved (last seq, open gaps, unseen start), after a
    header line naming the state file's ``generation``. A complete save writes the whole state with the
    next generation and starts a new journal, so the journal stays short; at
    start the journal of the loaded generation is replayed over the file (a
    journal of another generation is already in it). So a collector killed at
    any moment resumes from exactly what its files held when it last appended,
    and drops a replayed record it had written.

    Saving costs time in proportion to the publishers; after each save the next
    waits ten times what it took, so saving stays under ~10 % of the loop.
    """

    def __init__(
        self,
        path: str,
        ledger: LossLedger,
        lines_pending: Callable[[], bool],
        journal_path: str | None = None,
    ) -> None:
        self.path = path
        self.journal_path = (
            journal_path if journal_path is not None else os.path.splitext(path)[0] + ".journal"
        )
        self.ledger = ledger
        self._lines_pending = lines_pending
        self.next_save = 0.0
        """Monotonic time before which no save is started (see the class docstring)."""
        self.owed = False
        """A save was put off (lines pending, or too soon); the loop flushes and saves once it may."""
        self._complaints = Throttle(1, 10.0)
        self._written_changes = 0
        self._journal_fd: int | None = None
        self._journal_generation: int | None = None
        """The generation the journal file holds entries of (None: none of this run's yet)."""
        self._journal_bytes = 0
        """Bytes of entries appended since the journal's header."""
        self.mode = 0o640
        """The files' mode whatever the umask (the daemon sets it from --file-mode, at most 0640)."""

    def after_record(self) -> None:
        """Journal right after a sink wrote a batch (the file sink flushes early from inside
        write()), so a collector killed now is not blamed for lines it did write, nor writes
        them twice when they are replayed; save as soon as a new publisher shows up (see
        :class:`LossLedger`). Called per record."""
        ledger = self.ledger
        if ledger.fresh and time.monotonic() >= self.next_save:
            self.save()
        changes = ledger.stats.written.changes
        if changes != self._written_changes:
            self._written_changes = changes
            if ledger.dirty:
                if time.monotonic() >= self.next_save:
                    self.save()  # journals first
                else:
                    self.journal()
                    self.owed = True  # the loop flushes and saves once the pause is over

    def _verify(self, plan: object) -> bool | dict[str, list[int]] | None:
        """What of a write-ahead entry's writes reached the files (which live beside the state file)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        complete = writes_complete(directory, plan)
        if complete:
            log.info("the last batch the previous run wrote is on disk; its journal line was missing")
        if complete is not None:
            return complete
        written = records_written(directory, plan)
        if written is None:
            log.warning(
                "the previous run was killed while writing a batch, and the files cannot tell which "
                "of its records they hold (a file changed since?): records of it sent again may be "
                "written twice"
            )
        else:
            log.info(
                "the previous run was killed in the middle of writing a batch: %d records of it are "
                "whole in the files, the rest is written when it comes again",
                sum(len(seqs) for seqs in written.values()),
            )
        return written

    def intend(self, plan: list[PlannedWrite]) -> None:
        """The file sink is about to write *plan*, which leaves no line pending: append the state
        that will then hold, as a write-ahead entry (:meth:`LossLedger.journal_line` with files),
        so a kill between the writes and the journal line after them is told apart at the next
        start from a kill before them (the files' sizes say which). :attr:`touched` is kept: the
        line appended after the writes repeats these entries and supersedes this one."""
        ledger = self.ledger
        if not ledger.touched or self._journal_bytes > MAX_JOURNAL_BYTES:
            return
        # surrogateescape: a route target given as bytes that are not UTF-8 must not stop the writes.
        self._append(ledger.journal_line(plan).encode("utf-8", "surrogateescape"))

    def journal(self) -> None:
        """Append the state of the publishers touched since the last append, if every accepted
        line is on disk (else it waits: the journal never runs ahead of the files)."""
        ledger = self.ledger
        if not ledger.touched or self._lines_pending():
            return
        if self._journal_bytes > MAX_JOURNAL_BYTES:
            return  # saves have been failing for long: the next one that works starts it over
        if self._append(ledger.journal_line().encode("utf-8")):
            ledger.touched.clear()

    def _append(self, data: bytes) -> bool:
        """Append one journal line in one write; False (counted, said) if it failed."""
        ledger = self.ledger
        if not data:
            return False
        try:
            fd = self._journal_fd if self._journal_fd is not None else self._open_journal()
            if os.write(fd, data) != len(data):  # one write: a kill leaves at most one cut line
                raise OSError(errno.ENOSPC, "the line was cut short")
        except OSError as exc:
            self._close_journal()  # reopened for appending next time: the touched publishers wait
            ledger.stats.errors["journal_file"] += 1
            if self._complaints.allow("journal_file"):
                log.error(
                    "cannot append to %s (more within 10 s are only counted): %s",
                    self.journal_path,
                    escape_text(exc),
                )
            return False
        self._journal_bytes += len(data)
        return True

    def _open_journal(self) -> int:
        """The journal open for appending: this generation's own (a newline first ends a line a
        failed write may have cut), else a new one."""
        if self._journal_generation != self.ledger.generation:
            self._start_journal()
        else:
            self._journal_fd = os.open(
                self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            )
            os.write(self._journal_fd, b"\n")
        assert self._journal_fd is not None
        return self._journal_fd

    def _start_journal(self) -> None:
        """A new journal holding only its header (the state file's generation), open for appending."""
        self._close_journal()
        generation = self.ledger.generation
        header = JSON_ENCODER.encode({"journal": 1, "generation": generation}) + "\n"
        atomic_write(self.journal_path, header, sync=False, mode=self.mode)
        self._journal_generation = generation
        self._journal_fd = os.open(
            self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        )
        self._journal_bytes = 0

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._journal_fd)
            self._journal_fd = None

    def close(self) -> None:
        """Close the journal (after the last save)."""
        self._close_journal()

    def load(self) -> None:
        """Resume the sequence state a previous run saved and journaled; a missing or bad file is no error.

        Without it a restarted collector could not tell records a previous run
        wrote from records nobody received; with it, the gap it sees is exactly
        what was in flight or not yet written when the previous run died, and a
        replayed record it had written is dropped. A replayed journal is saved
        into the file at once (a new generation), so the next journal starts empty.
        """
        ledger = self.ledger
        try:
            with open(self.path, encoding="utf-8") as handle:
                count = ledger.from_json(handle.read(), time.time())
        except FileNotFoundError:
            count = 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, escape_text(exc))
            count = 0
        else:
            log.info("resumed the sequence numbers of %d publishers from %s", count, self.path)
            bad = ledger.stats.errors["bad_state_entry"]
            if bad:
                log.warning("ignored %d entries of the wrong shape in %s", bad, self.path)
        try:
            with open(self.journal_path, encoding="utf-8", errors="replace") as handle:
                journaled = ledger.apply_journal(handle.read(), time.time(), self._verify)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("ignoring %s: %s", self.journal_path, escape_text(exc))
            return
        if journaled is None:
            return  # of an older generation: the state file holds it already
        log.info("replayed %s: the state of %d publishers", self.journal_path, journaled)
        # Kept until a save holds what it says (if saving fails, appended to: a newline first
        # ends a line the kill cut, so the next entry is read whole).
        self._journal_generation = ledger.generation
        self._journal_bytes = 1
        ledger.dirty = True
        self.save(force=True)

    def save(self, force: bool = False) -> None:
        """Write the publishers' sequence state, never past a line that is not on disk.

        With every line written, that is each publisher's last seq and open gaps,
        with the next generation, and the journal starts over. While lines are
        pending, only the publishers first seen since the last save are added
        (at their first seq minus one); the rest waits for a save with nothing
        pending. Without *force* a complete save waits for :attr:`next_save`
        (the journal has the news meanwhile).
        """
        # The journal first: one append right after the write, whereas a kill during the save
        # below (a temporary file, a rename) would leave what was just written unrecorded.
        self.journal()
        ledger = self.ledger
        if not (ledger.dirty or ledger.fresh):
            return
        complete = not self._lines_pending()
        if not complete and not ledger.fresh:
            self.owed = True
            self.next_save = max(self.next_save, time.monotonic() + 0.05)  # not every loop pass
            return
        if complete and not force and not ledger.fresh and time.monotonic() < self.next_save:
            self.owed = True  # a complete save would cost too much now: the journal has the news
            return
        # CPU time of this thread: what the save costs the loop, not how long the
        # machine was busy elsewhere (a loaded host must not pause saving for long).
        started = time.thread_time()
        generation = ledger.generation
        if complete and (self._journal_bytes or self._journal_fd is None):
            ledger.generation += 1  # the new file holds all the journal says
        try:
            # No fsync: the state guards against a collector that dies, and the log
            # lines it vouches for are not synced either; the rename is what counts.
            atomic_write(self.path, ledger.to_json(complete), sync=False, mode=self.mode)
        except (OSError, ValueError, TypeError) as exc:
            ledger.generation = generation
            ledger.stats.errors["state_file"] += 1
            if self._complaints.allow("state_file"):
                log.error(
                    "cannot save %s (more within 10 s are only counted): %s", self.path, escape_text(exc)
                )
            return
        finally:
            self.next_save = time.monotonic() + min(10 * (time.thread_time() - started), 1.0)
        ledger.commit(complete)  # complete: what the journal would have said is in the file
        if complete:
            self.owed = False
            if ledger.generation != generation:
                try:
                    self._start_journal()
                except OSError as exc:
                    self._close_journal()  # the next append tries again
                    ledger.stats.errors["journal_file"] += 1
                    if self._complaints.allow("journal_file"):
                        log.error("cannot start %s: %s", self.journal_path, escape_text(exc))
