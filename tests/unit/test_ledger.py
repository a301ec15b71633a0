"""The loss ledger and its saved state, without sockets: gaps, order, restarts, bounds, bad files."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from zlogcollect import ledger as ledger_module
from zlogcollect.formatting import text_formatter
from zlogcollect.helpers import Throttle
from zlogcollect.ledger import LossLedger, StateFile, Untracked
from zlogcollect.routing import Router, default_routes
from zlogcollect.sinks.files import FileSink, Rotation
from zlogcollect.stats import Stats
from zlogcollect.wire import Record, SequenceMark


def meta(seq: int, pub: str = "p1", dropped: int = 0) -> dict[str, object]:
    return {"pub": pub, "seq": seq, "dropped": dropped, "host": "h", "pid": 7}


def observe_all(ledger: LossLedger, seqs: list[int], pub: str = "p1", now: float = 100.0) -> None:
    for seq in seqs:
        ledger.observe_meta(pub, seq, meta(seq, pub), now)


def test_gaps_are_loss_and_reported_once_after_the_grace(caplog: pytest.LogCaptureFixture) -> None:
    """A gap is warned about once it stayed open for the grace period (a replay may fill it first)."""
    stats = Stats()
    clock = [0.0]
    ledger = LossLedger(stats, clock=lambda: clock[0])
    observe_all(ledger, [0, 1, 5, 6, 9])
    assert stats.lost_by_publishers == 5
    with caplog.at_level("WARNING", logger="zlogcollect.ledger"):
        ledger.report()
        assert not caplog.records  # still within the grace
        clock[0] = ledger_module.LOSS_GRACE
        ledger.report()
        ledger.report()
    (line,) = [r.getMessage() for r in caplog.records]
    assert (
        line == "lost 5 records from host h pid 7 (publisher p1), 5 in all, 0 of them dropped by the sender"
    )


def test_a_repeated_seq_is_a_duplicate_not_a_restart_nor_loss() -> None:
    """Seqs already written (a replay from the same process) are dropped: no loss, no restart."""
    stats = Stats()
    ledger = LossLedger(stats)
    kept = [ledger.observe_meta("p1", seq, meta(seq), 100.0) for seq in [0, 1, 2, 1, 2, 3]]
    assert kept == [True, True, True, False, False, True]
    assert stats.lost_by_publishers == 0
    assert stats.replayed_duplicates == 2
    assert stats.publishers["p1"].restarts == 0


def test_a_lower_seq_from_another_pid_is_a_restart() -> None:
    """A sender reusing its pub in a new process starts over: a restart, its records kept."""
    stats = Stats()
    ledger = LossLedger(stats)
    observe_all(ledger, [0, 1, 2, 3])
    other = {**meta(0), "pid": 8}
    assert ledger.observe_meta("p1", 0, other, 100.0)
    assert ledger.observe_meta("p1", 1, {**meta(1), "pid": 8}, 100.0)
    assert stats.publishers["p1"].restarts == 1
    assert stats.lost_by_publishers == 0 and stats.replayed_duplicates == 0


def test_a_replay_fills_the_gap_corrects_lost_and_is_never_warned(caplog: pytest.LogCaptureFixture) -> None:
    """Seqs 0..99, then 50..120 again with 60..69 missing the first time: lost goes back to 0."""
    stats = Stats()
    clock = [0.0]
    ledger = LossLedger(stats, clock=lambda: clock[0])
    first = [seq for seq in range(100) if not 60 <= seq < 70]
    observe_all(ledger, first)
    assert stats.lost_by_publishers == 10
    kept = [ledger.observe_meta("p1", seq, meta(seq), 100.0) for seq in range(50, 121)]
    assert sum(kept) == 10 + 21  # the gap, then 100..120
    assert stats.lost_by_publishers == 0
    assert stats.recovered == 10 and stats.replayed_duplicates == 40
    clock[0] = 10.0
    with caplog.at_level("WARNING", logger="zlogcollect.ledger"):
        ledger.report()
        ledger.report(final=True)
    assert not caplog.records


def test_the_senders_dropped_records_leave_no_open_gap() -> None:
    """Records the sender says it dropped were never sent: lost for good, no gap kept for them."""
    stats = Stats()
    ledger = LossLedger(stats)
    observe_all(ledger, [0, 1])
    ledger.observe_meta("p1", 10, meta(10, dropped=3), 100.0)  # 7, 8, 9 dropped; 2..6 in flight
    assert stats.lost_by_publishers == 8
    assert stats.publishers["p1"].track.gaps == [[2, 6]]
    assert not ledger.observe_meta("p1", 8, meta(8), 100.0)  # never sent: cannot be a new record
    for seq in range(2, 7):
        assert ledger.observe_meta("p1", seq, meta(seq), 100.0)
    assert stats.lost_by_publishers == 3


def test_a_quarantined_record_is_no_gap() -> None:
    stats = Stats()
    ledger = LossLedger(stats)
    ledger.observe_meta("p1", 0, meta(0), 1.0)
    ledger.observe(SequenceMark("p1", 1, 0, "h", 7), 1.0)  # malformed, but its number arrived
    ledger.observe_meta("p1", 2, meta(2), 1.0)
    assert stats.lost_by_publishers == 0


def test_new_publishers_are_saved_at_their_first_seq_minus_one() -> None:
    """While lines are pending, only new publishers go into the state, at seq - 1: nothing vouched for."""
    stats = Stats()
    ledger = LossLedger(stats)
    observe_all(ledger, [0, 1, 2])
    assert ledger.fresh["p1"]["seq"] == -1
    partial = json.loads(ledger.to_json(complete=False))
    assert partial == {
        "version": 2,
        "generation": 0,
        "publishers": {"p1": {"host": "h", "pid": 7, "seq": -1, "seen": 100.0}},
    }
    ledger.commit(complete=False)
    assert not ledger.fresh and ledger.dirty
    assert json.loads(ledger.to_json(complete=True))["publishers"]["p1"]["seq"] == 2
    ledger.commit(complete=True)
    assert not ledger.dirty


def test_a_restart_with_saved_state_counts_what_was_in_flight() -> None:
    before = LossLedger(Stats())
    observe_all(before, list(range(500)))
    text = before.to_json()
    after_stats = Stats()
    after = LossLedger(after_stats)
    assert after.from_json(text, now=200.0) == 1
    assert after.saved == after_stats.publisher_state()
    observe_all(after, [507], now=200.0)
    assert after_stats.lost_by_publishers == 7
    assert after_stats.publishers["p1"].unseen == 0


def test_a_seq_minus_one_entry_makes_everything_from_zero_loss() -> None:
    """Saved at -1 (seen, nothing written): the next run counts records 0..N-1 as lost, not unseen."""
    stats = Stats()
    ledger = LossLedger(stats)
    state = {"version": 1, "publishers": {"p1": {"host": "h", "pid": 7, "seq": -1, "seen": 100.0}}}
    assert ledger.from_json(json.dumps(state), now=150.0) == 1
    observe_all(ledger, [4], now=150.0)
    assert stats.lost_by_publishers == 4
    assert stats.publishers["p1"].unseen == 0


@pytest.mark.parametrize("text", ["", "{", "[]", "5", '"x"', '{"publishers": []}', "[" * 100_000])
def test_bad_json_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - JSON, shape and depth errors all say so
        LossLedger(Stats()).from_json(text, now=1.0)


def test_entries_of_the_wrong_shape_are_skipped_and_counted() -> None:
    stats = Stats()
    ledger = LossLedger(stats)
    good = {"host": "h", "pid": 1, "seq": 3, "seen": 10.0}
    state = {"publishers": {"ok": good, "bad": {"seq": "3", "seen": 10.0}, "x" * 65: good}}
    assert ledger.from_json(json.dumps(state), now=11.0) == 1
    assert stats.errors["bad_state_entry"] == 2


def test_unreported_loss_is_bounded_and_summed_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past MAX_PUBLISHERS losing at once, the rest are only in the summary line; warnings are throttled."""
    monkeypatch.setattr(ledger_module, "MAX_PUBLISHERS", 5)
    clock = [0.0]
    ledger = LossLedger(Stats(), Throttle(2, 10.0, lambda: clock[0]), grace=0.0)
    for n in range(8):
        ledger.observe(SequenceMark(f"p{n}", 0, 0, "h", n), 1.0)
        ledger.observe(SequenceMark(f"p{n}", 3, 0, "h", n), 1.0)
    assert len(ledger._unreported) == 5  # noqa: SLF001 - the bound is the point
    with caplog.at_level("WARNING", logger="zlogcollect.ledger"):
        ledger.report()
        clock[0] = 11.0
        ledger.report()
    lines = [r.getMessage() for r in caplog.records]
    assert sum(line.startswith("lost 2 records") for line in lines) == 2
    assert lines[-1].startswith("... and 6 more publishers lost records (12 records")


def test_state_file_round_trip_and_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "_publishers.json"
    pending = [False]
    ledger = LossLedger(Stats())
    state = StateFile(str(path), ledger, lambda: pending[0])
    state.save()
    assert not path.exists()  # nothing observed, nothing to save
    observe_all(ledger, [0, 1, 2], now=time.time())  # load() drops entries silent for a week
    pending[0] = True
    state.save()
    assert json.loads(path.read_text())["publishers"]["p1"]["seq"] == -1
    observe_all(ledger, [3], now=time.time())
    state.save()  # nothing new, lines pending: put off
    assert state.owed
    pending[0] = False
    state.next_save = 0.0
    state.save()
    assert json.loads(path.read_text())["publishers"]["p1"]["seq"] == 3 and not state.owed
    assert not (tmp_path / "_publishers.json.tmp").exists()

    resumed = LossLedger(Stats())
    StateFile(str(path), resumed, lambda: False).load()
    assert resumed.stats.publishers["p1"].last_seq == 3

    path.write_bytes(b"\xff{not json")
    with caplog.at_level("WARNING", logger="zlogcollect.ledger"):
        StateFile(str(path), LossLedger(Stats()), lambda: False).load()
    assert "ignoring" in caplog.text
    StateFile(str(tmp_path / "missing.json"), LossLedger(Stats()), lambda: False).load()


def test_a_failed_save_is_counted_and_leaves_the_old_file(tmp_path: Path) -> None:
    stats = Stats()
    ledger = LossLedger(stats)
    observe_all(ledger, [0])
    state = StateFile(str(tmp_path / "gone" / "_publishers.json"), ledger, lambda: False)
    logging.getLogger("zlogcollect.ledger").disabled = True
    try:
        state.save()
    finally:
        logging.getLogger("zlogcollect.ledger").disabled = False
    assert stats.errors["state_file"] == 1
    assert ledger.dirty and ledger.fresh


def written_batch(ledger: LossLedger, state: StateFile) -> None:
    """What the file sink does after writing a batch: bump ``written``; the collector calls after_record."""
    ledger.stats.written["app.log"] += 1
    state.after_record()


def test_the_journal_holds_every_written_batch_and_a_killed_run_resumes_from_it(tmp_path: Path) -> None:
    """Saves put off, batches journaled: a new ledger loads file + journal and knows exactly what was written,
    its open gaps included; it drops what was written and keeps what was not."""
    path = tmp_path / "_publishers.json"
    ledger = LossLedger(Stats())
    state = StateFile(str(path), ledger, lambda: False)
    observe_all(ledger, [0, 1, 2], now=time.time())
    written_batch(ledger, state)  # the first save (a new publisher), and the journal starts
    state.next_save = time.monotonic() + 3600  # no more saves: only the journal from here on
    observe_all(ledger, [*range(3, 10), *range(15, 20)], now=time.time())
    written_batch(ledger, state)
    observe_all(ledger, [12], now=time.time())
    written_batch(ledger, state)
    assert json.loads(path.read_text())["publishers"]["p1"]["seq"] == 2
    journal = (tmp_path / "_publishers.journal").read_text().splitlines()
    assert json.loads(journal[0]) == {"journal": 1, "generation": ledger.generation}
    assert json.loads(journal[-1])["publishers"]["p1"]["gaps"] == [[10, 11], [13, 14]]
    # SIGKILL: no close, no save. The next run:
    resumed = LossLedger(Stats())
    again = StateFile(str(path), resumed, lambda: False)
    again.load()
    track = resumed.stats.publishers["p1"].track
    assert (track.last, track.gaps) == (19, [[10, 11], [13, 14]])
    kept = [resumed.observe_meta("p1", seq, meta(seq), time.time()) for seq in range(21)]
    assert [seq for seq, keep in zip(range(21), kept, strict=True) if keep] == [10, 11, 13, 14, 20]
    assert resumed.stats.replayed_duplicates == 16 and resumed.stats.recovered == 4
    # The replayed journal was saved into the file at once, with a new, empty journal.
    saved = json.loads(path.read_text())
    assert saved["version"] == 2 and saved["publishers"]["p1"]["gaps"] == [[10, 11], [13, 14]]
    assert len((tmp_path / "_publishers.journal").read_text().splitlines()) == 1
    again.close()
    state.close()


def test_a_cut_last_line_is_counted_and_a_stale_journal_ignored(tmp_path: Path) -> None:
    path = tmp_path / "_publishers.json"
    journal = tmp_path / "_publishers.journal"
    state = {
        "version": 2,
        "generation": 3,
        "publishers": {"p1": {"host": "h", "pid": 7, "seq": 5, "seen": time.time()}},
    }
    path.write_text(json.dumps(state))
    entry = {"host": "h", "pid": 7, "seq": 9, "seen": time.time(), "gaps": [[6, 7]]}
    line = json.dumps({"publishers": {"p1": entry}})
    journal.write_text('{"journal":1,"generation":3}\n' + line + '\n{"publishers":{"p1":{"se')
    ledger = LossLedger(Stats())
    StateFile(str(path), ledger, lambda: False).load()
    track = ledger.stats.publishers["p1"].track
    assert (track.last, track.gaps) == (9, [[6, 7]])
    assert ledger.stats.errors["bad_journal_line"] == 1

    journal.write_text(
        '{"journal":1,"generation":2}\n' + json.dumps({"publishers": {"p1": {**entry, "seq": 100}}}) + "\n"
    )
    path.write_text(json.dumps(state))
    stale = LossLedger(Stats())
    StateFile(str(path), stale, lambda: False).load()
    assert stale.stats.publishers["p1"].track.last == 5  # generation 2 is in the file already


def test_a_version_1_state_still_loads() -> None:
    ledger = LossLedger(Stats())
    state = {"version": 1, "publishers": {"p1": {"host": "h", "pid": 7, "seq": 4, "seen": 100.0}}}
    assert ledger.from_json(json.dumps(state), now=150.0) == 1
    assert ledger.generation == 0
    assert not ledger.observe_meta("p1", 4, meta(4), 150.0)
    assert ledger.observe_meta("p1", 5, meta(5), 150.0)


def test_the_journal_is_not_written_while_lines_are_pending(tmp_path: Path) -> None:
    """The journal never runs ahead of the files: with lines waiting in memory it waits too."""
    path = tmp_path / "_publishers.json"
    pending = [False]
    ledger = LossLedger(Stats())
    state = StateFile(str(path), ledger, lambda: pending[0])
    observe_all(ledger, [0], now=time.time())
    written_batch(ledger, state)
    state.next_save = time.monotonic() + 3600
    pending[0] = True
    observe_all(ledger, [1, 2], now=time.time())
    written_batch(ledger, state)
    journal = tmp_path / "_publishers.journal"
    assert len(journal.read_text().splitlines()) == 1
    pending[0] = False
    written_batch(ledger, state)
    assert json.loads(journal.read_text().splitlines()[-1])["publishers"]["p1"]["seq"] == 2
    state.close()


def test_the_journal_has_the_state_files_mode_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "_publishers.json"
    ledger = LossLedger(Stats())
    state = StateFile(str(path), ledger, lambda: False)
    state.mode = 0o600
    old = os.umask(0)
    try:
        observe_all(ledger, [0, 1], now=time.time())
        written_batch(ledger, state)
    finally:
        os.umask(old)
    state.close()
    assert stat.S_IMODE((tmp_path / "_publishers.journal").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_publisher_saved_before_anything_of_it_was_written_keeps_its_records_open() -> None:
    """First seen at seq 5 and saved at once (seq 4, nothing written), then killed: the next run
    writes a replay of 0..9 whole; 0..4 were sent before the first run knew it (not recovered)."""
    first = LossLedger(Stats())
    observe_all(first, [5])
    text = first.to_json(complete=False)
    assert json.loads(text)["publishers"]["p1"] == {
        "host": "h",
        "pid": 7,
        "seq": 4,
        "seen": 100.0,
        "gaps": [[0, 4]],
        "start": 5,
    }
    stats = Stats()
    resumed = LossLedger(stats)
    assert resumed.from_json(text, now=150.0) == 1
    assert all(resumed.observe_meta("p1", seq, meta(seq), 150.0) for seq in range(10))
    assert (stats.lost_by_publishers, stats.recovered, stats.replayed_duplicates) == (0, 0, 0)


def test_a_failed_append_keeps_the_journal_and_the_entries_for_the_next_one(tmp_path: Path) -> None:
    """An append that fails is counted; the journal so far stays, and the next append carries what
    the failed one held, so a run killed afterwards still resumes from everything written."""
    path = tmp_path / "_publishers.json"
    ledger = LossLedger(Stats())
    state = StateFile(str(path), ledger, lambda: False)
    observe_all(ledger, [0], now=time.time())
    written_batch(ledger, state)
    state.next_save = time.monotonic() + 3600
    observe_all(ledger, [1, 2], now=time.time())
    written_batch(ledger, state)
    assert state._journal_fd is not None  # noqa: SLF001 - the failure is simulated on it
    os.close(state._journal_fd)  # noqa: SLF001
    observe_all(ledger, [3, 7], now=time.time())
    logging.getLogger("zlogcollect.ledger").disabled = True
    try:
        written_batch(ledger, state)
    finally:
        logging.getLogger("zlogcollect.ledger").disabled = False
    assert ledger.stats.errors["journal_file"] == 1 and ledger.touched == {"p1"}
    written_batch(ledger, state)
    state.close()
    resumed = LossLedger(Stats())
    StateFile(str(path), resumed, lambda: False).load()
    track = resumed.stats.publishers["p1"].track
    assert (track.last, track.gaps) == (7, [[4, 6]])


def test_publishers_waiting_for_the_journal_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines pending for long while peers invent publishers: past twice the publisher limit, only the
    publishers still known wait for the journal (the stats forget the longest silent)."""
    monkeypatch.setattr(ledger_module, "MAX_PUBLISHERS", 5)
    ledger = LossLedger(Stats())
    for n in range(100):
        ledger.observe_meta(f"p{n}", 0, meta(0, f"p{n}"), 100.0 + n)
    ledger.stats.forget_oldest(keep=3)
    for n in range(100, 120):
        ledger.observe_meta(f"p{n}", 0, meta(0, f"p{n}"), 300.0 + n)
    assert "p0" not in ledger.touched
    assert ledger.touched == set(ledger.stats.publishers)


def test_without_a_state_file_nothing_is_kept_for_a_journal() -> None:
    ledger = LossLedger(Stats())
    ledger.touched = Untracked()
    observe_all(ledger, [0, 1, 5])
    assert not ledger.touched and ledger.stats.lost_by_publishers == 3


def killed_after_the_write(
    tmp_path: Path,
    seqs: list[int],
    marks: bool = True,
    errors: frozenset[int] = frozenset({4}),
    pid: int = 7,
) -> tuple[StateFile, FileSink]:
    """A collector's state file and file sink on *tmp_path*: seqs 0-2 written and journaled, then *seqs*
    observed and written (the write-ahead entry first), and the run killed before their journal line.
    *errors* are ERRORs (app.log and errors.log); *marks*: the entry says which records the lines are;
    *pid*: the publisher's pid in the second batch (another one: it restarted)."""
    path = tmp_path / "_publishers.json"
    ledger = LossLedger(Stats())
    files = FileSink(
        str(tmp_path), Router(default_routes()), text_formatter("%(message)s"), Rotation(), ledger.stats
    )
    state = StateFile(str(path), ledger, lambda: bool(files.pending_lines))
    files.before_write = state.intend
    files.track_marks = marks
    for batch in ([0, 1, 2], seqs):
        for seq in batch:
            extension = {**meta(seq), "pid": 7 if batch != seqs else pid}
            ledger.observe_meta("p1", seq, extension, time.time())
            level, levelno = ("ERROR", 40) if seq in errors else ("INFO", 20)
            files.write(Record("app", level, levelno, "", f"m{seq}", 0.0, meta=extension))
        files.flush()
        if batch != seqs:
            state.after_record()  # the first save; the second batch never gets its journal line
            state.next_save = time.monotonic() + 3600  # no more saves: only the journal from here on
    return state, files


def resumed_from(tmp_path: Path, replay: int = 7, pid: int = 7) -> tuple[LossLedger, list[int]]:
    """The next run: load, then the handler (*pid*) replays seqs 0 to *replay* - 1: which does it keep?"""
    resumed = LossLedger(Stats())
    StateFile(str(tmp_path / "_publishers.json"), resumed, lambda: False).load()
    kept = [
        seq
        for seq in range(replay)
        if resumed.observe_meta("p1", seq, {**meta(seq), "pid": pid}, time.time())
    ]
    return resumed, kept


def test_a_kill_between_the_write_and_its_journal_line_writes_nothing_twice(tmp_path: Path) -> None:
    """The write-ahead entry, checked against the files' sizes, says the batch is on disk."""
    state, files = killed_after_the_write(tmp_path, [3, 4, 5])
    journal = (tmp_path / "_publishers.journal").read_text().splitlines()
    assert "files" in json.loads(journal[-1])  # the last entry is the write-ahead one
    assert (tmp_path / "app.log").read_text() == "m0\nm1\nm2\nm3\nm4\nm5\n"
    resumed, kept = resumed_from(tmp_path)
    assert kept == [6]
    assert resumed.stats.replayed_duplicates == 6 and resumed.stats.errors["interrupted_batch"] == 0
    files.close()
    state.close()


def cut_and_resumed(
    tmp_path: Path, seqs: list[int], sizes: dict[str, int], marks: bool = True
) -> tuple[LossLedger, list[int]]:
    """:func:`killed_after_the_write`, the files then cut back to *sizes* (what the kill let reach
    them), and :func:`resumed_from` them."""
    state, files = killed_after_the_write(tmp_path, seqs, marks)
    files.close()
    state.close()
    for name, size in sizes.items():
        os.truncate(tmp_path / name, size)
    return resumed_from(tmp_path)


def test_a_kill_before_the_write_keeps_the_batch_open(tmp_path: Path) -> None:
    """The same entry with the files still at their sizes before: the batch is written when replayed."""
    resumed, kept = cut_and_resumed(tmp_path, [3, 4, 5], {"app.log": 9, "errors.log": 0})
    assert kept == [3, 4, 5, 6] and resumed.stats.errors["interrupted_batch"] == 0


def test_a_batch_written_to_one_file_of_two_keeps_open_only_what_the_other_lacks(tmp_path: Path) -> None:
    """app.log written, errors.log not: seqs 3 and 5 are whole everywhere they went, 4 is not (a gap)."""
    resumed, kept = cut_and_resumed(tmp_path, [3, 4, 5], {"errors.log": 0})
    assert kept == [4, 6] and resumed.stats.errors["interrupted_batch"] == 0
    track = resumed.stats.publishers["p1"].track
    assert track.last == 6 and track.gaps == []


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 6, 7, 9])
def test_a_write_cut_short_by_the_kill_keeps_open_exactly_the_records_not_whole(
    tmp_path: Path, cut: int
) -> None:
    """Linux cuts a write short when SIGKILL comes in the middle of a batch of several pages: the records
    whose lines are whole count as written, the rest (the cut one included) is written when replayed."""
    # The batch "m3\nm5\nm6\n" after "m0\nm1\nm2\n", cut after *cut* bytes; 4 never arrived (a gap).
    resumed, kept = cut_and_resumed(tmp_path, [3, 5, 6], {"app.log": 9 + cut})
    whole = cut // 3  # lines of three bytes
    assert kept == sorted([4, *[3, 5, 6][whole:]])
    assert resumed.stats.errors["interrupted_batch"] == 0


def test_a_cut_batch_never_claims_more_than_its_gaps_can_keep_open(tmp_path: Path) -> None:
    """440 records, 40 runs of ten ERRORs each followed by an INFO, errors.log not written: 40 ranges
    stay open. A tracker keeps 32: claiming all of app.log would give the lowest up for good (their
    replay refused, though not on disk). The restore stops short, and every ERROR is kept."""
    seqs = list(range(3, 443))
    errors = frozenset(seq for seq in seqs if (seq - 3) % 11 != 10)
    state, files = killed_after_the_write(tmp_path, seqs, errors=errors)
    files.close()
    state.close()
    os.truncate(tmp_path / "errors.log", 0)
    resumed, kept = resumed_from(tmp_path, replay=444)
    assert errors <= set(kept)  # none lost
    assert 443 in kept and len(kept) < len(seqs)  # and some of app.log not written twice
    assert resumed.stats.errors["interrupted_batch"] == 0


def test_a_publisher_restarted_in_a_cut_batch_is_left_as_it_was(tmp_path: Path) -> None:
    """The batch is a new process of the publisher (pid 8) counting from 0 again: its state before the
    batch (pid 7 at seq 2) cannot be moved on by the new numbers, so the new process's replay is kept."""
    state, files = killed_after_the_write(tmp_path, [0, 1, 2, 3], pid=8)
    files.close()
    state.close()
    os.truncate(tmp_path / "app.log", 9 + 6)  # two of the new lines whole
    _, kept = resumed_from(tmp_path, replay=5, pid=8)
    assert kept == [0, 1, 2, 3, 4]  # written again, never refused


def test_a_batch_half_written_without_its_records_is_counted_and_written_again(tmp_path: Path) -> None:
    """Without the runs the files cannot tell which records a cut batch holds: all of it stays open."""
    resumed, kept = cut_and_resumed(tmp_path, [3, 4, 5], {"errors.log": 0}, marks=False)
    assert kept == [3, 4, 5, 6] and resumed.stats.errors["interrupted_batch"] == 1


def test_a_write_ahead_entry_followed_by_its_journal_line_is_superseded(tmp_path: Path) -> None:
    """Once the line after the write is there, the entry is not checked (the files have moved on)."""
    state, files = killed_after_the_write(tmp_path, [3, 4, 5])
    state.after_record()  # the journal line this time
    with open(tmp_path / "app.log", "a") as handle:
        handle.write("a later batch, its entries in a later journal line\n")
    resumed, kept = resumed_from(tmp_path)
    assert kept == [6] and resumed.stats.errors["interrupted_batch"] == 0
    files.close()
    state.close()
