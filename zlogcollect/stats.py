"""Counters: what was received, written, dropped and why, and what each publisher lost."""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zlogcollect.seqtrack import Outcome, SeqTracker, valid_gaps


@dataclass(slots=True)
class PublisherLoss:
    """Loss seen from one publisher (a zlogcollect handler instance in one process)."""

    host: str
    pid: int | None
    track: SeqTracker = field(default_factory=SeqTracker)
    """The highest seq written and the open gaps below it (which records a replay may still fill)."""
    gaps: int = 0
    """Records missing between sequence numbers that did arrive: everything lost, wherever
    (less those that arrived late after all: a replay or a reordered record filling a gap)."""
    announced: int = 0
    """Of the gaps, how many the publisher itself reported dropping (high-water mark, hold
    buffer full); the rest were lost on the way (e.g. in flight when the collector died)."""
    restarts: int = 0
    """Times the sequence went backwards from another pid (the publisher restarted or was re-created)."""
    unseen: int = 0
    """Records before the first one this collector saw that the sender did not report
    dropping: sent before this collector started (a previous one may have them)."""
    seen: float = 0.0
    """When the last record from this publisher arrived (epoch seconds)."""
    inherited: int = -1
    """The last seq of the state restored from --dir (-1: none): a gap at or below it was
    opened, and counted lost, by an earlier run, so filling it is recovered but takes
    nothing off this run's ``gaps`` (every gap this run opens lies above it)."""

    @property
    def last_seq(self) -> int:
        """The highest seq seen (every record at or below it is written, but for the open gaps)."""
        return self.track.last


SUMMARY_FILES = 20
"""Files named in the counters line (the most written ones); the rest are only counted."""

MAX_PUBLISHERS = 10_000
"""Publishers remembered at once; the longest silent are forgotten first."""

_MAX_SEQ = 2**63 - 1  # as wire.MAX_INT: a saved state is held to the same range as the wire
_MAX_HOST = 255
_MAX_PID = 2**32 - 1
_MAX_PUB = 64


class WriteCounter(Counter[str]):
    """Lines written per file, plus ``changes``: bumped on every update, so the collector
    can tell cheaply that a sink wrote a batch (and save the sequence state right after)."""

    changes: int = 0

    def __setitem__(self, key: str, value: int) -> None:
        self.changes += 1
        super().__setitem__(key, value)


@dataclass
class Stats:
    """Every counter the collector keeps; :meth:`as_dict` gives them as data."""

    received: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    unrouted: int = 0
    written: WriteCounter = field(default_factory=WriteCounter)
    dropped: Counter[str] = field(default_factory=Counter)
    """Lines given up, keyed by ``reason`` (e.g. ``disk_error``)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Problems that did not lose data (a failed write that was retried, a reopen)."""
    publishers: dict[str, PublisherLoss] = field(default_factory=dict)
    forgotten_lost: int = 0
    """Losses of publishers forgotten to bound memory (still part of `lost`)."""
    amqp: Counter[str] = field(default_factory=Counter)
    """The AMQP bridge: received, skipped (--only), delivered (confirmed), dropped, resent, ..."""
    published: Counter[str] = field(default_factory=Counter)
    """The republished stream (``--publish``): ``sent``, and ``dropped`` at the high-water mark
    (records that are on disk all the same; only a slow subscriber missed them)."""
    refused: Counter[str] = field(default_factory=Counter)
    """Connections the receive socket refused, by reason (``access``: ``unknown_key``, ``no_curve``,
    ``ip_not_allowed``, ``bad_handshake``): with ``--curve-secret`` or ``--allow-ip`` only."""
    publish_refused: Counter[str] = field(default_factory=Counter)
    """The same for ``--publish``'s socket (with ``--publish-allow-keys``)."""
    replayed_duplicates: int = 0
    """Records whose seq was already written for their publisher (a handler's replay after a
    collector restart): dropped before every sink, neither loss nor a publisher restart."""
    recovered: int = 0
    """Records that arrived in a gap already counted lost (a replay, a reordered record):
    written, and taken off `lost`."""

    def observe_sequence(
        self, publisher: str, host: str, pid: int | None, seq: int, announced: int, now: float = 0.0
    ) -> tuple[Outcome, int]:
        """Record a publisher's sequence number: is it NEW, does it fill a gap, or is it a DUPLICATE
        (already written: the caller drops it)? With NEW, also how many records newly went missing."""
        loss = self.publishers.get(publisher)
        if loss is None:
            if len(self.publishers) >= MAX_PUBLISHERS:
                self.forget_oldest()
            loss = self.publishers[publisher] = PublisherLoss(host, pid)
            # Sequences start at 0. Of a first record's seq N, the records the
            # sender says it dropped are lost; the rest were sent before this
            # collector started, to a previous one or to nobody: it cannot tell.
            # They stay an open gap: a handler's replay may still bring them.
            missing = min(max(announced, 0), max(seq, 0))
            loss.unseen = max(seq, 0) - missing
            track = loss.track
            track.last = seq
            track.start = seq - missing
            track.open(0, track.start - 1)
            outcome = Outcome.NEW
        else:
            track = loss.track
            if seq <= track.last and pid is not None and loss.pid is not None and pid != loss.pid:
                # Another process under the same pub (a sender that reuses its id): a restart.
                loss.restarts += 1
                loss.pid = pid
                track = loss.track = SeqTracker(seq, start=seq)
                track.open(0, seq - 1)
                loss.inherited = -1
                outcome, missing = Outcome.NEW, 0
            else:
                outcome, missing = track.observe(seq, announced)
                if outcome is Outcome.DUPLICATE:
                    self.replayed_duplicates += 1
                    return outcome, 0  # its `dropped` was counted when it first arrived
                if outcome is Outcome.FILLED:
                    if seq < track.start:
                        loss.unseen = max(loss.unseen - 1, 0)  # it was never counted lost
                    else:
                        self.recovered += 1
                        if seq > loss.inherited:
                            loss.gaps -= 1  # counted lost by this run: no longer
        loss.seen = now
        loss.gaps += missing
        # A record the sender dropped still used up a sequence number, so it is
        # already in `missing`; the announcement only says where it was lost.
        loss.announced += announced
        return outcome, missing

    def forget_oldest(self, keep: int = MAX_PUBLISHERS * 9 // 10) -> None:
        """Forget the publishers silent the longest, keeping *keep* (counted losses stay in `lost`)."""
        ranked = sorted(self.publishers.items(), key=lambda item: item[1].seen, reverse=True)
        for name, loss in ranked[keep:]:
            self.forgotten_lost += loss.gaps
            del self.publishers[name]

    def publisher_state(self) -> dict[str, dict[str, object]]:
        """What a restarted collector needs to go on counting gaps and dropping duplicates:
        per publisher, the last seq, the open gaps below it and where its unseen start ends."""
        return {name: publisher_entry(p) for name, p in self.publishers.items()}

    def restore_publishers(self, state: object, now: float, max_age: float = 7 * 86400) -> int:
        """Resume from :meth:`publisher_state` (ignoring entries silent for over *max_age* s).

        Returns how many were restored. Entries of the wrong shape or out of range
        are ignored and counted (``errors=bad_state_entry``): a state file is input
        too. A *state* that is not an object raises ValueError, like corrupt JSON.
        """
        if not isinstance(state, dict):
            raise ValueError(f"publishers is {type(state).__name__}, not an object")
        restored = ignored = 0
        for name, entry in state.items():
            if not _valid_entry(name, entry):
                ignored += 1
                continue
            if now - entry["seen"] > max_age:
                continue
            pid = entry.get("pid")
            seq = entry["seq"]
            gaps = valid_gaps(entry.get("gaps", []), seq)
            start = entry.get("start", 0)
            if gaps is None or start.__class__ is not int or not 0 <= start <= seq + 1:
                ignored += 1
                continue
            self.publishers[name] = PublisherLoss(
                entry.get("host") or "?",
                pid if pid.__class__ is int and 0 <= pid <= _MAX_PID else None,
                SeqTracker(seq, gaps, start),
                seen=float(entry["seen"]),
                inherited=seq,
            )
            restored += 1
            if restored >= MAX_PUBLISHERS:
                break
        if ignored:
            self.errors["bad_state_entry"] += ignored
        return restored

    @property
    def lost_by_publishers(self) -> int:
        """Records publishers sent or meant to send that never arrived."""
        return self.forgotten_lost + sum(p.gaps for p in self.publishers.values())

    def as_dict(self, files: bool = True) -> dict[str, Any]:
        """The counters as JSON-ready data: totals, and per-reason / per-file dicts.

        With *files* off (the bridge) the file counters are left out. ``files``
        names the SUMMARY_FILES most written files; ``more_files`` counts the rest.
        """
        data: dict[str, Any] = {"received": self.received}
        if files:
            data["written"] = sum(self.written.values())
            data["file_writes"] = self.written.changes  # batches written: one per file per flush
        data["malformed"] = sum(self.malformed.values())
        data["unrouted"] = self.unrouted
        data["dropped"] = dict(sorted(self.dropped.items()))
        data["errors"] = dict(sorted(self.errors.items()))
        data["amqp"] = dict(sorted(self.amqp.items()))
        data["published"] = dict(sorted(self.published.items()))
        data["refused"] = dict(sorted(self.refused.items()))
        data["publish_refused"] = dict(sorted(self.publish_refused.items()))
        data["publishers"] = len(self.publishers)
        data["lost"] = self.lost_by_publishers
        data["unseen_before_start"] = sum(p.unseen for p in self.publishers.values())
        data["replayed_duplicates"] = self.replayed_duplicates
        data["recovered"] = self.recovered
        data["malformed_by"] = dict(sorted(self.malformed.items()))
        if files:
            items = self.written.items()
            # A peer inventing sources must not turn the counters into megabytes.
            data["files"] = dict(sorted(heapq.nlargest(SUMMARY_FILES, items, key=lambda item: item[1])))
            data["more_files"] = len(items) - len(data["files"])
        return data

    def summary(self, files: bool = True) -> str:
        """One line with the counters an operator looks at first; never raises.

        With *files* off (the bridge) the file counters are left out.
        """
        try:
            return render_summary(self.as_dict(files))
        except Exception as exc:  # noqa: BLE001 - the counters line is how an operator sees trouble
            return f"received={self.received} (counters unavailable: {type(exc).__name__})"


def render_summary(data: dict[str, Any]) -> str:
    """The counters line from :meth:`Stats.as_dict`: zeros and empty groups left out."""

    def pairs(group: dict[str, int]) -> str:
        return ",".join(f"{k}:{v}" for k, v in group.items())

    parts = [f"received={data['received']}"]
    if "written" in data:
        parts.append(f"written={data['written']}")
    parts.append(f"malformed={data['malformed']}")
    if data["unrouted"]:
        parts.append(f"unrouted={data['unrouted']}")
    for group in ("dropped", "errors", "amqp", "published", "refused", "publish_refused"):
        if data.get(group):
            parts.append(f"{group}={pairs(data[group])}")
    if data["publishers"]:
        parts.append(f"publishers={data['publishers']} lost={data['lost']}")
        parts.extend(
            f"{key}={data[key]}"
            for key in ("unseen_before_start", "replayed_duplicates", "recovered")
            if data.get(key)
        )
    if data["malformed_by"]:
        parts.append(f"malformed_by={pairs(data['malformed_by'])}")
    if "files" in data:
        parts.append(f"files={pairs(data['files']) or '-'}")
        if data["more_files"]:
            parts.append(f"more_files={data['more_files']}")
    return " ".join(parts)


def publisher_entry(loss: PublisherLoss) -> dict[str, object]:
    """One publisher's saved state (``_publishers.json`` version 2, a journal line)."""
    track = loss.track
    entry: dict[str, object] = {"host": loss.host, "pid": loss.pid, "seq": track.last, "seen": loss.seen}
    if track.gaps:
        entry["gaps"] = [gap[:] for gap in track.gaps]  # a copy: the saved state must not move
    if track.start:
        entry["start"] = track.start
    return entry


def _valid_entry(name: object, entry: object) -> bool:
    """One saved publisher: the shape :meth:`Stats.publisher_state` writes, numbers in range."""
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_PUB or not isinstance(entry, dict):
        return False
    seq, seen, host = entry.get("seq"), entry.get("seen"), entry.get("host", "?")
    return (
        seq.__class__ is int
        and -1 <= seq <= _MAX_SEQ  # -1: first seen at seq 0, nothing of it written yet
        and seen.__class__ in (int, float)
        and 0 <= seen < 7.3e9
        and (host is None or (isinstance(host, str) and len(host) <= _MAX_HOST))
    )
