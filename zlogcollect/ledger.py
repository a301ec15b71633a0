"""The per-publisher loss ledger: sequence gaps, the warnings about them, and the state kept between runs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from zlogcollect.helpers import JSON_ENCODER, Throttle, atomic_write
from zlogcollect.stats import MAX_PUBLISHERS, Stats
from zlogcollect.wire import SequenceMark, escape_text, sequence_mark

log = logging.getLogger(__name__)

WARN_BURST = 10
"""Loss warnings printed per WARN_PERIOD; the rest are counted and summarised."""
WARN_PERIOD = 10.0
STATE_VERSION = 1

Entry = dict[str, object]


class LossLedger:
    """Per-publisher sequence numbers turned into loss, the warnings about it, and its saved state.

    What the saved state says: every entry is a seq whose line (and all before
    it) is on disk. Publishers first seen since the last save are registered at
    their first seq minus one, so a run killed before it wrote their lines is
    not mistaken by the next one for a collector that never saw them (which
    would call the missing records "unseen before start" instead of lost).
    """

    def __init__(self, stats: Stats, throttle: Throttle | None = None) -> None:
        self.stats = stats
        self._publishers = stats.publishers
        self.fresh: dict[str, Entry] = {}
        """Publishers first seen since the last save, at their first seq minus one (cleared in place)."""
        self.saved: dict[str, Entry] = {}
        """What the last save wrote (or the state loaded at start)."""
        self.dirty = False
        """A sequence number moved since the last complete save."""
        self._snapshot: dict[str, Entry] = {}
        self._unreported: dict[str, tuple[int, SequenceMark]] = {}
        self._throttle = throttle if throttle is not None else Throttle(WARN_BURST, WARN_PERIOD)

    def observe_meta(self, publisher: str, seq: int, meta: dict[str, object], now: float) -> None:
        """A record's checked extension (pub, seq, dropped, host, pid): the hot path."""
        loss = self._publishers.get(publisher)
        if loss is not None and seq == loss.last_seq + 1 and "dropped" not in meta:
            # The usual case, the next record of a known publisher: nothing missing, nothing announced.
            loss.last_seq = seq
            loss.seen = now
            self.dirty = True
            return
        dropped = meta.get("dropped", 0)
        host = meta.get("host")
        pid = meta.get("pid")
        host_text = host if isinstance(host, str) else "?"
        pid_number = pid if isinstance(pid, int) else None
        if publisher not in self.stats.publishers:
            self._register(publisher, host_text, pid_number, seq, now)
        missing = self.stats.observe_sequence(
            publisher, host_text, pid_number, seq, dropped if isinstance(dropped, int) else 0, now
        )
        self.dirty = True
        if missing:
            mark = sequence_mark(meta)
            if mark is not None:  # always, for a checked extension
                self._note_loss(mark, missing)

    def observe(self, mark: SequenceMark, now: float) -> None:
        """A quarantined record's sequence number: quarantined is not lost, so it is no gap."""
        if mark.publisher not in self.stats.publishers:
            self._register(mark.publisher, mark.host, mark.pid, mark.seq, now)
        missing = self.stats.observe_sequence(
            mark.publisher, mark.host, mark.pid, mark.seq, mark.dropped, now
        )
        self.dirty = True
        if missing:
            self._note_loss(mark, missing)

    def _register(self, publisher: str, host: str, pid: int | None, seq: int, now: float) -> None:
        if len(self.fresh) < MAX_PUBLISHERS:
            self.fresh[publisher] = {"host": host, "pid": pid, "seq": seq - 1, "seen": now}

    def _note_loss(self, mark: SequenceMark, missing: int) -> None:
        # The mark is kept too: the stats may forget this publisher before the report.
        previous = self._unreported.get(mark.publisher)
        if previous is None and len(self._unreported) >= MAX_PUBLISHERS:
            self._throttle.hold("loss", missing)  # only in the summary line: memory stays bounded
            return
        self._unreported[mark.publisher] = ((previous[0] if previous else 0) + missing, mark)

    def report(self, final: bool = False) -> None:
        """A warning per publisher that lost records since the last report, at most
        WARN_BURST every WARN_PERIOD s; the rest are summed up in one line."""
        throttle = self._throttle
        for publisher, (count, mark) in self._unreported.items():
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
        self._unreported.clear()
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
        return JSON_ENCODER.encode({"version": STATE_VERSION, "publishers": self._snapshot})

    def commit(self, complete: bool = True) -> None:
        """The text of the last :meth:`to_json` is safely saved."""
        self.saved = self._snapshot
        self.fresh.clear()
        if complete:
            self.dirty = False

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
        self.saved = self.stats.publisher_state()
        return count


class StateFile:
    """Where the ledger is kept between runs (collect mode: ``_publishers.json`` in --dir).

    Saving costs time in proportion to the publishers; after each save the next
    waits ten times what it took, so saving stays under ~10 % of the loop.
    """

    def __init__(self, path: str, ledger: LossLedger, lines_pending: Callable[[], bool]) -> None:
        self.path = path
        self.ledger = ledger
        self._lines_pending = lines_pending
        self.next_save = 0.0
        """Monotonic time before which no save is started (see the class docstring)."""
        self.owed = False
        """A save was put off while lines were pending; the loop flushes and saves once it may."""
        self._complaints = Throttle(1, 10.0)
        self._written_changes = 0
        self.mode = 0o640
        """The file's mode whatever the umask (the daemon sets it from --file-mode, at most 0640)."""

    def after_record(self) -> None:
        """Save right after a sink wrote a batch (the file sink flushes early from inside
        write()), so a collector killed now is not blamed for lines it did write, and as
        soon as a new publisher shows up (see :class:`LossLedger`). Called per record."""
        ledger = self.ledger
        if ledger.fresh and time.monotonic() >= self.next_save:
            self.save()
        changes = ledger.stats.written.changes
        if changes != self._written_changes:
            self._written_changes = changes
            if ledger.dirty:
                if time.monotonic() >= self.next_save:
                    self.save()
                else:
                    self.owed = True  # the loop flushes and saves once the pause is over

    def load(self) -> None:
        """Resume the sequence numbers a previous run saved; a missing or bad file is no error.

        Without them a restarted collector could not tell records a previous run
        wrote from records nobody received; with them, the gap it sees is exactly
        what was in flight or not yet written when the previous run died.
        """
        try:
            with open(self.path, encoding="utf-8") as handle:
                count = self.ledger.from_json(handle.read(), time.time())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, escape_text(exc))
            return
        log.info("resumed the sequence numbers of %d publishers from %s", count, self.path)
        bad = self.ledger.stats.errors["bad_state_entry"]
        if bad:
            log.warning("ignored %d entries of the wrong shape in %s", bad, self.path)

    def save(self) -> None:
        """Write the publishers' last sequence numbers, never past a line that is not on disk.

        With every line written, that is each publisher's last seq. While lines
        are pending, only the publishers first seen since the last save are added
        (at their first seq minus one); the rest waits for a save with nothing pending.
        """
        ledger = self.ledger
        if not (ledger.dirty or ledger.fresh):
            return
        complete = not self._lines_pending()
        if not complete and not ledger.fresh:
            self.owed = True
            self.next_save = max(self.next_save, time.monotonic() + 0.05)  # not every loop pass
            return
        # CPU time of this thread: what the save costs the loop, not how long the
        # machine was busy elsewhere (a loaded host must not pause saving for long).
        started = time.thread_time()
        try:
            # No fsync: the state guards against a collector that dies, and the log
            # lines it vouches for are not synced either; the rename is what counts.
            atomic_write(self.path, ledger.to_json(complete), sync=False, mode=self.mode)
        except (OSError, ValueError, TypeError) as exc:
            ledger.stats.errors["state_file"] += 1
            if self._complaints.allow("state_file"):
                log.error(
                    "cannot save %s (more within 10 s are only counted): %s", self.path, escape_text(exc)
                )
            return
        finally:
            self.next_save = time.monotonic() + min(10 * (time.thread_time() - started), 1.0)
        ledger.commit(complete)
        if complete:
            self.owed = False
