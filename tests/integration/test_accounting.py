"""The accounting invariant: every record received is on disk, quarantined, or counted with a reason.

Checked on the collector's dispatch path with a real file sink (no socket is
needed to hand it frame sets): ``received == malformed + unrouted + routed``,
and for every file, the lines on disk equal ``written`` for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zlogcollect import formatting
from zlogcollect.collector import Collector
from zlogcollect.routing import Router, default_routes
from zlogcollect.sinks.files import FileSink, Rotation
from zlogcollect.stats import Stats

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
