"""The accounting invariant: every record received is on disk, quarantined, or counted with a reason.

Checked on the collector's dispatch path with a real file sink (no socket is
needed to hand it frame sets): ``received == malformed + unrouted + routed``,
and for every file, the lines on disk equal ``written`` for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from zlogcollect import formatting
from zlogcollect.collector import Collector
from zlogcollect.routing import Router, default_routes
from zlogcollect.sinks.amqp_message import MessageFormat
from zlogcollect.sinks.files import FileSink, Rotation
from zlogcollect.stats import Stats
from zlogcollect.testing.process import read_lines
from zlogcollect.wire import Record

pytestmark = pytest.mark.integration


def frame_sets() -> list[list[bytes]]:
    good = [[f"app{i % 3}.INFO.db".encode(), f"record {i}".encode()] for i in range(60)]
    structured = [
        [b"app1.INFO", b"structured", json.dumps({"v": 1, "pub": "p", "seq": i, "created": 1.0}).encode()]
        for i in range(10)
    ]
    bad = [
        [b"app1.INFO"],  # one frame
        [b"app1.INFO", b"\xff\xfe not utf-8"],
        [b"app1.NOTICE", b"a level nobody declared"],
        [b"app1.INFO", b"x", b"{not json"],
        [b"app1.INFO", b"x", b"y", b"z"],  # too many frames
    ]
    return good + bad + structured


def test_every_record_received_is_written_quarantined_or_counted(tmp_path: Path) -> None:
    stats = Stats()
    render = formatting.text_formatter(formatting.DEFAULT_FORMAT, False, "prefix")
    sink = FileSink(str(tmp_path), Router(default_routes(), "default"), render, Rotation(), stats)
    collector = Collector([sink], stats, state_path=str(tmp_path / "_publishers.json"))
    frames = frame_sets()
    for frame_set in frames:
        collector.dispatch(frame_set)
    collector.close()

    counters = stats.as_dict()
    assert counters["received"] == len(frames)
    assert counters["malformed"] == 5, counters["malformed_by"]
    assert counters["dropped"] == {}
    sources = {path: count for path, count in stats.written.items() if not Path(path).name.startswith("_")}
    routed = sum(sources.values())
    assert counters["received"] == counters["malformed"] + counters["unrouted"] + routed
    for path, count in stats.written.items():
        assert len((tmp_path / path).read_text(encoding="utf-8").splitlines()) == count, path
    assert len((tmp_path / "_malformed.log").read_text(encoding="utf-8").splitlines()) == 5


@pytest.mark.parametrize("source_from_peer", [False, True])
def test_a_hostile_certificate_name_is_escaped_on_the_line_and_in_file_names(
    tmp_path: Path, source_from_peer: bool
) -> None:
    """The peer is a certificate's file name (access.peer_name escapes it when the allow-list is read);
    even a raw one reaching dispatch never puts a control character on a line or leaves --dir."""
    stats = Stats()
    render = formatting.text_formatter(formatting.DEFAULT_PEER_FORMAT, False, "prefix")
    sink = FileSink(str(tmp_path), Router(default_routes(), "default"), render, Rotation(), stats)
    collector = Collector([sink], stats, source_from_peer=source_from_peer)
    collector.dispatch([b"app1.ERROR", b"hello"], "evil\x1b[2J..")
    collector.dispatch([b"app1.INFO", b"bad \xff"], "evil\x1b[2J")  # quarantined: the peer is named
    collector.close()
    written = {path.relative_to(tmp_path).as_posix(): path.read_text() for path in tmp_path.rglob("*.log")}
    assert all(not path.startswith("..") and "\x1b" not in path and "\n" not in path for path in written)
    text = "".join(written.values())
    assert "\x1b" not in text and "evil\\x1b[2J" in text
    assert "(peer evil\\x1b[2J)" in written["_malformed.log"]


class Recording:
    """A sink that keeps what it is given (as the AMQP bridge would publish it)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.quarantined: list[str] = []
        self.format = MessageFormat()

    def write(self, record: Record) -> None:
        message = self.format(record)
        self.messages.append((message.message_id, message.body))

    def quarantine(self, reason: str, detail: str, frames: Sequence[bytes]) -> None:
        assert detail and frames
        self.quarantined.append(reason)

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_replayed_record_reaches_every_sink_and_the_window_once(tmp_path: Path) -> None:
    """Replayed frames (same pub and seq) are dropped before the sinks, --publish and the live window;
    the bridge's message_id is the record's pub:seq, so it is the same whichever copy went out."""
    stats = Stats()
    render = formatting.text_formatter(formatting.DEFAULT_FORMAT, False, "prefix")
    sink = FileSink(str(tmp_path), Router(default_routes(), "default"), render, Rotation(), stats)
    bridge = Recording()
    collector = Collector([sink, bridge], stats, state_path=str(tmp_path / "_publishers.json"))
    accepted: list[Record] = []
    republished: list[Sequence[bytes]] = []
    collector.accepted = accepted.append
    collector.republish = lambda frames, _record: republished.append(frames)

    def frames(seq: int) -> list[bytes]:
        extension = {"v": 1, "pub": "p", "seq": seq, "created": 1.0, "pid": 3}
        return [b"app1.INFO", f"record {seq}".encode(), json.dumps(extension).encode()]

    sent = [*range(10), *range(12, 15), *range(5, 15)]  # 10 and 11 arrive only with the replay
    for seq in sent:
        collector.dispatch(frames(seq))
    collector.dispatch([b"app1.BOGUS", b"odd", b'{"v":1,"pub":"p","seq":15,"levelno":26}'])
    collector.dispatch(
        [b"app1.BOGUS", b"odd", b'{"v":1,"pub":"p","seq":15,"levelno":26}']
    )  # quarantined once
    collector.close()
    assert [message_id for message_id, _ in bridge.messages] == [
        f"p:{seq}" for seq in [*range(10), 12, 13, 14, 10, 11]
    ]
    assert len(accepted) == len(republished) == 15 and bridge.quarantined == ["no_level"]
    assert len(read_lines(tmp_path / "app1.log")) == 15
    counters = stats.as_dict()
    assert (counters["replayed_duplicates"], counters["recovered"], counters["lost"]) == (9, 2, 0)
    assert counters["received"] == counters["malformed"] + 15 + counters["replayed_duplicates"]
    assert MessageFormat()(accepted[3]).message_id == MessageFormat()(accepted[3]).message_id == "p:3"
