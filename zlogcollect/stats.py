"""Counters: what was received, written, dropped and why, and what each publisher lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class PublisherLoss:
    """Loss seen from one publisher (a zlogcollect handler instance in one process)."""

    host: str
    pid: object
    last_seq: int = -1
    gaps: int = 0
    """Records missing between sequence numbers that did arrive: everything lost, wherever."""
    announced: int = 0
    """Of the gaps, how many the publisher itself reported dropping (high-water mark, hold
    buffer full); the rest were lost on the way (e.g. in flight when the collector died)."""
    restarts: int = 0
    """Times the sequence went backwards (the publisher restarted or was re-created)."""


@dataclass
class Stats:
    """Every counter the collector keeps.

    The invariant the tests check: ``received == accepted + sum(malformed)``, and for
    each file, ``routed == written + dropped + pending``.
    """

    received: int = 0
    accepted: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    unrouted: int = 0
    written: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    """Lines given up, keyed by ``reason`` (e.g. ``disk_error``)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Problems that did not lose data (a failed write that was retried, a reopen)."""
    publishers: dict[str, PublisherLoss] = field(default_factory=dict)
    amqp: Counter[str] = field(default_factory=Counter)
    """The AMQP bridge: received, skipped (--only), delivered (confirmed), dropped, resent, ..."""

    def observe_sequence(self, publisher: str, host: str, pid: object, seq: int, announced: int) -> int:
        """Record a publisher's sequence number; return how many records newly went missing."""
        loss = self.publishers.get(publisher)
        if loss is None:
            loss = self.publishers[publisher] = PublisherLoss(host, pid)
            # Sequences start at 0: a first record with seq 5 means 0..4 were lost
            # before this collector saw the publisher (e.g. while it was restarting).
            missing = max(seq, 0)
        elif seq <= loss.last_seq:
            loss.restarts += 1
            missing = 0
        else:
            missing = seq - loss.last_seq - 1
        loss.last_seq = seq
        loss.gaps += missing
        # A record the sender dropped still used up a sequence number, so it is
        # already in `missing`; the announcement only says where it was lost.
        loss.announced += announced
        return missing

    @property
    def lost_by_publishers(self) -> int:
        """Records publishers sent or meant to send that never arrived."""
        return sum(p.gaps for p in self.publishers.values())

    def summary(self) -> str:
        """One line with the counters an operator looks at first."""
        parts = [
            f"received={self.received}",
            f"written={sum(self.written.values())}",
            f"malformed={sum(self.malformed.values())}",
        ]
        if self.unrouted:
            parts.append(f"unrouted={self.unrouted}")
        if self.dropped:
            parts.append("dropped=" + ",".join(f"{k}:{v}" for k, v in sorted(self.dropped.items())))
        if self.errors:
            parts.append("errors=" + ",".join(f"{k}:{v}" for k, v in sorted(self.errors.items())))
        if self.amqp:
            parts.append("amqp=" + ",".join(f"{k}:{v}" for k, v in sorted(self.amqp.items())))
        if self.publishers:
            parts.append(f"publishers={len(self.publishers)} lost={self.lost_by_publishers}")
        if self.malformed:
            parts.append("malformed_by=" + ",".join(f"{k}:{v}" for k, v in sorted(self.malformed.items())))
        files = ",".join(f"{k}:{v}" for k, v in sorted(self.written.items()))
        parts.append(f"files={files or '-'}")
        return " ".join(parts)
