"""The peer identity (the CURVE certificate's name) in records, lines, JSON, AMQP bodies, routes and tail.

Pure parts only: the collector sets ``Record.peer`` from the ZAP User-Id; here
records get it by hand, as the collector will. What a client sends can never
become the peer: a ``peer`` key in its extension is a claim, kept apart.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zlogcollect import formatting
from zlogcollect.display import View, take_peer
from zlogcollect.formatting import (
    DEFAULT_FORMAT,
    DEFAULT_PEER_FORMAT,
    default_format,
    json_formatter,
    text_formatter,
)
from zlogcollect.republish import Reframer
from zlogcollect.routing import NO_PEER, Route, RouteError, Router, default_routes, parse_route
from zlogcollect.sinks.amqp_message import (
    EXTRA_PEER,
    MessageFormat,
    amqp_body,
    encode_body,
    routing_key,
    validate_routing_key,
)
from zlogcollect.wire import (
    CLAIMED_PEER,
    CLAIMED_SOURCE,
    MAX_PEER_CHARS,
    MalformedRecord,
    Parser,
    Record,
    build_topic,
    check_extension,
    decode_extension,
    encode_extension,
    escape_controls,
    extension_with_peer,
    parse_topic,
    sequence_mark,
    with_peer_source,
)

STAMP = time.mktime((2026, 11, 25, 15, 9, 31, 0, 0, -1)) + 0.1234
TIME = "2026-11-25 15:09:31.123"
META = {"created": STAMP, "host": "web01", "pid": 4242, "pub": "p1", "seq": 3}


def record(source: str = "app1", peer: str | None = None, subtopic: str = "db", **meta: Any) -> Record:
    made = Record(source, "ERROR", 40, subtopic, "timeout", STAMP, STAMP, dict(meta) or None)
    if peer is not None:
        made.peer = peer  # as the collector does, with CURVE on
    return made


def frames(topic: bytes = b"app1.ERROR.db", text: bytes = b"timeout", **fields: Any) -> list[bytes]:
    return [topic, text, encode_extension({**META, **fields})]


# --- Record.peer ------------------------------------------------------------------------------


def test_a_record_has_no_peer_unless_the_collector_sets_one() -> None:
    plain = Record("app1", "INFO", 20, "", "m", STAMP)
    assert plain.peer is None
    assert Parser().parse(frames(), STAMP).peer is None
    assert Parser().parse([b"app1.INFO", b"stock"], STAMP).peer is None
    plain.peer = "app1"
    assert plain.peer == "app1"
    assert "peer" not in plain.meta


def test_copies_pickles_and_replace_keep_working() -> None:
    original = record(peer="app1", host="h")
    for again in (copy.copy(original), copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
        assert again == original
        assert again.peer == "app1"
    assert record(peer="app2") != record(peer="app1")  # the peer is part of a record's value
    changed = dataclasses.replace(original, message="other")  # peer is no __init__ parameter
    assert (changed.message, changed.source, changed.peer) == ("other", "app1", None)


def test_source_from_peer_takes_the_peers_name_and_keeps_the_claim() -> None:
    claimed = Parser().parse(frames(b"app2.ERROR.db.query"), STAMP)
    with_peer_source(claimed, "app1")
    assert (claimed.peer, claimed.source, claimed.topic) == ("app1", "app1", "app1.ERROR.db.query")
    assert claimed.meta[CLAIMED_SOURCE] == "app2"
    # Routes follow the new topic: the default {source}.log is the peer's own file.
    assert Router(default_routes()).route(claimed) == ["app1.log", "errors.log"]
    # A dotted root and no root at all.
    dotted = with_peer_source(Parser().parse(frames(b"shop.web.WARNING"), STAMP), "app1")
    assert (dotted.topic, dotted.meta[CLAIMED_SOURCE]) == ("app1.WARNING", "shop.web")
    rootless = with_peer_source(Parser().parse([b"INFO.x", b"m"], STAMP), "app1")
    assert (rootless.source, rootless.topic, rootless.meta[CLAIMED_SOURCE]) == ("app1", "app1.INFO.x", "")


def test_source_from_peer_adds_nothing_when_the_claim_is_the_peers_own_name() -> None:
    honest = Parser().parse(frames(), STAMP)
    assert with_peer_source(honest, "app1").topic == "app1.ERROR.db"
    assert CLAIMED_SOURCE not in honest.meta
    # A claimed_source the client sent itself is not left to mislead.
    forged = Parser().parse(frames(claimed_source="app9"), STAMP)
    assert CLAIMED_SOURCE not in with_peer_source(forged, "app1").meta
    assert with_peer_source(Parser().parse(frames(claimed_source="x"), STAMP), "app7").meta[
        CLAIMED_SOURCE
    ] == ("app1")


def test_source_from_peer_rebuilds_a_topic_that_is_not_canonical() -> None:
    odd = Record("app", "INFO", 20, "sub", "m", STAMP, topic="other.INFO.sub")
    assert with_peer_source(odd, "p").topic == "p.INFO.sub"
    escaped = with_peer_source(Record("a", "INFO", 20, "", "m", STAMP), "bad\x1bname")
    assert escaped.peer == escaped.source == "bad\\x1bname"


@given(
    st.text(st.characters(codec="utf-8"), max_size=20).filter(lambda s: "\n" not in s),
    st.sampled_from(["INFO", "ERROR", "Level 25"]),
    st.text(max_size=10),
    st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=12),
)
def test_source_from_peer_always_gives_the_canonical_topic(
    source: str, level: str, sub: str, peer: str
) -> None:
    made = with_peer_source(Record(source, level, 20, sub, "m", STAMP), peer)
    assert made.topic == build_topic(peer, level, sub)
    assert made.source == peer


# --- the reserved extension key ----------------------------------------------------------------


def test_a_peer_a_client_sends_is_a_claim_never_its_peer() -> None:
    spoofed = Parser().parse(frames(peer="admin"), STAMP)
    assert spoofed.peer is None
    assert spoofed.meta[CLAIMED_PEER] == "admin"
    assert "peer" not in spoofed.meta
    line = json.loads(json_formatter()(spoofed))
    assert "peer" not in line
    assert line[CLAIMED_PEER] == "admin"
    assert "peer" not in amqp_body(spoofed)
    assert " | admin | " not in text_formatter(DEFAULT_PEER_FORMAT)(spoofed)
    # Any JSON value; the claim's key is the parser's, whatever the client put there.
    odd = Parser().parse(frames(peer={"x": [1]}, claimed_peer="ignored"), STAMP)
    assert (odd.peer, odd.meta[CLAIMED_PEER]) == (None, {"x": [1]})


def test_a_trusting_parser_takes_the_peer_from_the_extension() -> None:
    trusted = Parser(trust_peer=True).parse(frames(peer="app1"), STAMP)
    assert trusted.peer == "app1"
    assert "peer" not in trusted.meta
    assert Parser(trust_peer=True).parse(frames(peer=None), STAMP).peer is None
    assert Parser(trust_peer=True).parse(frames(peer="a\x1b[2Jb"), STAMP).peer == "a\\x1b[2Jb"


@pytest.mark.parametrize("peer", ["", 7, True, ["app1"], {"n": "app1"}, "x" * (MAX_PEER_CHARS + 1)])
def test_a_trusting_parser_refuses_a_peer_that_is_no_name(peer: object) -> None:
    with pytest.raises(MalformedRecord) as caught:
        Parser(trust_peer=True).parse(frames(peer=peer), STAMP)
    assert caught.value.reason == "bad_extension"
    assert "peer must be" in caught.value.detail
    assert caught.value.mark is not None  # its sequence number still counts


def test_a_huge_claimed_peer_is_only_kept_as_a_claim() -> None:
    huge = Parser().parse(frames(peer="p" * 100_000), STAMP)
    assert huge.peer is None
    assert len(huge.meta[CLAIMED_PEER]) == 100_000


# --- extension_with_peer: the republished stream -----------------------------------------------


def test_the_peer_spliced_into_an_extension_round_trips_through_a_trusting_parser() -> None:
    sent = frames()
    out = extension_with_peer(sent, "app1")
    assert out[:2] == sent[:2]
    assert out[2] == sent[2][:-1] + b',"peer":"app1"}'  # spliced, not re-encoded
    again = Parser(trust_peer=True).parse(out, STAMP + 1)
    original = Parser().parse(sent, STAMP)
    assert again.peer == "app1"
    assert again.meta == original.meta
    assert sequence_mark(again.meta) == sequence_mark(original.meta)
    # The collector's own parser never trusts it: a stream fed back is a claim again.
    assert Parser().parse(out, STAMP).peer is None


def test_a_client_sent_peer_is_overridden_and_kept_as_a_claim() -> None:
    out = extension_with_peer(frames(peer="admin"), "app1")
    again = Parser(trust_peer=True).parse(out, STAMP)
    assert again.peer == "app1"
    assert again.meta[CLAIMED_PEER] == "admin"
    assert out[2].count(b'"peer"') == 1


def test_without_a_verified_peer_a_client_sent_peer_is_taken_out() -> None:
    out = extension_with_peer(frames(peer="admin"), None)
    again = Parser(trust_peer=True).parse(out, STAMP)
    assert again.peer is None
    assert again.meta[CLAIMED_PEER] == "admin"
    assert b'"peer"' not in out[2]


def test_frames_without_peer_and_without_claim_go_out_unchanged() -> None:
    sent = frames()
    assert extension_with_peer(sent, None) == sent
    assert extension_with_peer(sent[:2], None) == sent[:2]


def test_a_two_frame_record_gains_a_minimal_extension_outside_loss_accounting() -> None:
    out = extension_with_peer([b"app1.WARNING.db", b"slow"], "app1")
    assert out[2] == b'{"v":1,"peer":"app1"}'
    meta = json.loads(out[2])
    check_extension(meta)  # no pub, no seq: nothing a collector requires
    assert sequence_mark(meta) is None
    again = Parser(trust_peer=True).parse(out, STAMP)
    assert (again.peer, again.topic, again.message, again.meta) == ("app1", "app1.WARNING.db", "slow", {})


def test_a_stock_record_reframed_then_given_its_peer_shows_in_tail_as_in_the_files() -> None:
    stock = [b"app1.WARN.db", b"WARNING slow query\n"]
    accepted = Parser().parse(stock, STAMP)
    accepted.peer = "app1"
    out = extension_with_peer(Reframer()(stock, accepted), accepted.peer)
    shown = Parser(trust_peer=True).parse(out, STAMP + 5)
    assert View().line(shown) == text_formatter(DEFAULT_PEER_FORMAT)(accepted)


@pytest.mark.parametrize(
    "peer", ['we"ird\\name', "Grüße", "name\udce9", "new\nline", "x" * MAX_PEER_CHARS, "a,b}"]
)
def test_any_peer_name_is_spliced_as_valid_json(peer: str) -> None:
    for sent in (frames(), frames()[:2], frames(peer="c")):
        out = extension_with_peer(sent, peer)
        again = Parser(trust_peer=True).parse(out, STAMP)
        assert again.peer == escaped(peer)


def escaped(peer: str) -> str:
    """What a peer name reads as: control characters escaped, a lone surrogate as its text."""
    return escape_controls(peer.encode("utf-8", "backslashreplace").decode())


def test_the_word_peer_elsewhere_in_the_extension_is_left_alone() -> None:
    sent = frames(extra={"peer": "10.0.0.7", "note": 'said "peer"'})
    out = extension_with_peer(sent, "app1")
    again = Parser(trust_peer=True).parse(out, STAMP)
    assert again.peer == "app1"
    assert again.meta["extra"] == {"peer": "10.0.0.7", "note": 'said "peer"'}
    assert CLAIMED_PEER not in again.meta


def test_an_extension_with_trailing_space_still_takes_the_peer() -> None:
    sent = [b"app1.INFO", b"m", b'{"v":1,"seq":1,"pub":"p"}  \n']
    again = Parser(trust_peer=True).parse(extension_with_peer(sent, "app1"), STAMP)
    assert (again.peer, again.meta) == ("app1", {"seq": 1, "pub": "p"})


def test_only_accepted_frame_counts_are_spliced() -> None:
    with pytest.raises(ValueError, match="2 or 3 frames"):
        extension_with_peer([b"one"], "app1")
    with pytest.raises(MalformedRecord):
        extension_with_peer([b"a.INFO", b"m", b"not json with peer"], "app1")


@given(
    st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=5), st.text(min_size=1)
)
def test_whatever_a_client_sends_the_spliced_peer_is_the_one_read(extra: dict[str, Any], peer: str) -> None:
    peer = peer[:MAX_PEER_CHARS]
    sent = [b"app1.INFO", b"m", encode_extension({"extra": extra, "peer": "forged", "pub": "p", "seq": 1})]
    again = Parser(trust_peer=True).parse(extension_with_peer(sent, peer), STAMP)
    assert again.peer == escaped(peer)
    assert again.meta[CLAIMED_PEER] == "forged"


# --- lines and JSON ----------------------------------------------------------------------------


def test_the_peer_format_is_the_default_with_a_peer_column_after_the_source() -> None:
    assert DEFAULT_PEER_FORMAT == (
        "%(asctime)s | %(levelname)s | %(source)s | %(peer)s | %(origin)s | %(subtopic)s | %(message)s"
    )
    assert default_format(curve=True) == DEFAULT_PEER_FORMAT
    assert default_format(curve=False) == DEFAULT_FORMAT
    render = text_formatter(DEFAULT_PEER_FORMAT)
    assert render(record(peer="app1", host="web01", pid=4242)) == (
        f"{TIME} | ERROR | app1 | app1 | web01:4242 | db | timeout\n"
    )
    assert render(record()) == f"{TIME} | ERROR | app1 | - | - | db | timeout\n"


def test_the_default_format_shows_no_peer_column() -> None:
    assert text_formatter()(record(peer="app1")) == f"{TIME} | ERROR | app1 | - | db | timeout\n"


def test_one_topic_from_two_peers_gives_two_lines_cached_apart() -> None:
    for fmt in (DEFAULT_PEER_FORMAT, "%(peer)s/%(source)s %(asctime)s %(message)s", "%(peer)s %(message)s"):
        render = text_formatter(fmt)
        peers = ("app1", "app2", None)
        lines = [render(record(peer=peer)) for peer in peers + peers]  # the second three from the cache
        assert lines[:3] == lines[3:]
        assert len(set(lines)) == 3
        for peer, line in zip(peers, lines, strict=False):
            assert (peer or "-") in line.replace(" | ", " ").replace("/", " ").split(" ")


def test_peer_in_custom_formats_on_every_path() -> None:
    assert text_formatter("%(peer)s %(message)s")(record(peer="app1")) == "app1 timeout\n"
    assert text_formatter("%(peer)s %(message)s")(record()) == "- timeout\n"
    # A format with an extra field takes the general path.
    general = text_formatter("%(peer)s %(user)s %(message)s")
    assert general(record(peer="app1", extra={"user": "bob"})) == "app1 bob timeout\n"
    # A traceback takes the general path too, in the peer format.
    trace = "Traceback (most recent call last):\nKeyError: 'k'"
    with_trace = record(peer="app1", exc=trace)
    assert text_formatter(DEFAULT_PEER_FORMAT)(with_trace).startswith(
        f"{TIME} | ERROR | app1 | app1 | - | db | "
    )


@pytest.mark.parametrize(
    ("peer", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("tab\there", "tab\\there"),
        ("100%", "100%"),
        ("", "-"),
    ],
)
def test_a_peer_name_cannot_break_or_forge_a_line(peer: str, shown: str) -> None:
    for fmt in (DEFAULT_PEER_FORMAT, "%(peer)s|%(asctime)s %(message)s"):
        for _ in range(2):  # the second from the cache
            line = text_formatter(fmt)(record(peer=peer))
            assert line.count("\n") == 1
            assert shown in line
            assert "\x1b" not in line


def test_a_multiline_message_keeps_its_continuation_prefix_in_the_peer_format() -> None:
    made = record(peer="app1")
    made.message = "first\nsecond"
    assert text_formatter(DEFAULT_PEER_FORMAT)(made) == (
        f"{TIME} | ERROR | app1 | app1 | - | db | first\n{TIME} | app1 + second\n"
    )


def test_json_lines_carry_the_peer_only_when_there_is_one() -> None:
    render = json_formatter()
    without = json.loads(render(record(host="h")))
    assert "peer" not in without
    with_peer = json.loads(render(record(peer="app1", host="h")))
    assert with_peer["peer"] == "app1"
    assert {k: v for k, v in with_peer.items() if k != "peer"} == without


def test_the_format_check_knows_peer() -> None:
    assert "peer" in formatting.FIELDS
    with pytest.raises(formatting.FormatError, match="peer"):
        text_formatter("%(peer)d")


# --- routes ------------------------------------------------------------------------------------


def test_peer_in_a_file_template() -> None:
    router = Router([parse_route("#={peer}/{source}.log"), parse_route("#=by-peer/{peer}.log")])
    assert router.route(record(peer="app1")) == ["app1/app1.log", "by-peer/app1.log"]
    assert router.route(record()) == [f"{NO_PEER}/app1.log", f"by-peer/{NO_PEER}.log"]
    assert NO_PEER == "_nopeer"


@pytest.mark.parametrize(
    ("peer", "name"),
    [
        ("../etc", "_._etc"),
        ("a/b", "a_b"),
        (".hidden", "_hidden"),
        ("errors", "errors_"),
        ("x" * 300, "x" * 100),
    ],
)
def test_peer_in_a_file_name_is_sanitised_like_a_source(peer: str, name: str) -> None:
    assert Route("#", "{peer}.log").path_for(record(peer=peer), "default") == f"{name}.log"


@given(st.text(min_size=1))
def test_no_peer_name_leaves_the_directory(peer: str) -> None:
    path = Route("#", "logs/{peer}/{source}.log").path_for(record(peer=peer), "default")
    parts = path.split("/")
    assert len(parts) == 3 and parts[0] == "logs"
    assert parts[1] not in ("", ".", "..") and not os.path.isabs(path)


def test_the_route_cache_key_holds_the_peer_when_a_route_uses_it() -> None:
    by_peer = Router([parse_route("#={peer}.log")])
    assert not by_peer.per_topic
    keys = {by_peer.cache_key(record(peer=p)) for p in ("app1", "app2", None)}
    assert len(keys) == 3
    both = Router([parse_route("#={peer}-{host}.log")])
    assert both.cache_key(record(peer="a", host="h")) != both.cache_key(record(peer="b", host="h"))
    assert both.cache_key(record(peer="a", host="h")) != both.cache_key(record(peer="a", host="g"))
    # Routes without {peer} keep their keys: the peer is not part of them.
    by_host = Router([parse_route("#={host}.log")])
    assert by_host.cache_key(record(peer="a", host="h")) == by_host.cache_key(record(peer="b", host="h"))
    assert Router(default_routes()).cache_key(record(peer="a")) == "app1.ERROR.db"


def test_an_unknown_placeholder_names_peer_among_the_available() -> None:
    with pytest.raises(RouteError, match=r"\{peer\}"):
        parse_route("#={user}.log")


# --- AMQP --------------------------------------------------------------------------------------


def test_the_amqp_body_carries_the_peer_only_when_there_is_one() -> None:
    assert "peer" not in amqp_body(record(host="h"))
    body = json.loads(encode_body(record(peer="app1", host="h")))
    assert body["peer"] == "app1"
    assert MessageFormat()(record(peer="app1")).properties()["headers"] == {
        "subtopic": "db",
        "source": "app1",
    }


def test_an_apps_extra_peer_is_sent_as_extra_peer_never_as_the_peer() -> None:
    plain = amqp_body(record(extra={"peer": "10.0.0.7", "user": "bob"}))
    assert "peer" not in plain
    assert (plain[EXTRA_PEER], plain["user"]) == ("10.0.0.7", "bob")
    verified = amqp_body(record(peer="app1", extra={"peer": "10.0.0.7"}))
    assert (verified["peer"], verified[EXTRA_PEER]) == ("app1", "10.0.0.7")


def test_peer_in_the_routing_key() -> None:
    validate_routing_key("{peer}.{level}")
    assert routing_key("{peer}.{level}", record(peer="app1")) == "app1.ERROR"
    assert routing_key("{peer}.{level}", record()) == f"{NO_PEER}.ERROR"


# --- tail --------------------------------------------------------------------------------------


def test_tail_shows_the_peer_column_for_records_with_a_peer() -> None:
    view = View()
    assert view.line(record(peer="app1")) == f"{TIME} | ERROR | app1 | app1 | - | db | timeout\n"
    assert view.line(record()) == f"{TIME} | ERROR | app1 | - | db | timeout\n"
    # An explicit format is shown as given; JSON carries the peer as the collector's lines do.
    assert View(fmt="%(source)s %(message)s").line(record(peer="app1")) == "app1 timeout\n"
    assert View(fmt="%(peer)s %(message)s").line(record(peer="app1")) == "app1 timeout\n"
    assert json.loads(View(json=True).line(record(peer="app1")))["peer"] == "app1"


def test_tail_takes_a_peer_from_the_meta_too() -> None:
    made = record(peer="app1", host="h")
    from_meta = record(host="h")
    from_meta.meta["peer"] = "app1"
    assert View().line(from_meta) == View().line(made)
    assert (from_meta.peer, from_meta.meta) == ("app1", {"host": "h"})
    assert take_peer(from_meta) == "app1"
    odd = record()
    odd.meta["peer"] = 7
    assert take_peer(odd) is None
    assert odd.meta == {"peer": 7}


def test_the_republished_stream_shows_the_collectors_peer_in_tail() -> None:
    sent = frames(peer="admin")  # a client trying to pass for another key
    accepted = Parser().parse(sent, STAMP)
    accepted.peer = "app1"  # what the collector verified
    republished = extension_with_peer(sent, accepted.peer)
    shown = Parser(trust_peer=True).parse(republished, STAMP + 1)
    assert View().line(shown) == text_formatter(DEFAULT_PEER_FORMAT)(accepted)
    assert " | app1 | web01:4242 | " in View().line(shown)
    assert json.loads(View(json=True).line(shown))[CLAIMED_PEER] == "admin"


def test_topic_of_a_parsed_peer_source_record_parses_back() -> None:
    made = with_peer_source(Parser().parse(frames(b"evil.ERROR.db"), STAMP), "app1")
    topic, number = parse_topic(made.topic)
    assert (topic.root, topic.level, topic.subtopic, number) == ("app1", "ERROR", "db", 40)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(JSON_VALUES)
def test_any_peer_value_is_a_claim_or_a_clean_refusal_never_a_crash(peer: object) -> None:
    sent = [b"app1.INFO", b"m", encode_extension({"peer": peer, "pub": "p", "seq": 1})]
    claimed = Parser().parse(sent, STAMP)
    assert claimed.peer is None
    json.loads(json_formatter()(claimed))  # the claim is shown, as strict JSON
    peer = decode_extension(sent[2])["peer"]  # as the wire has it (an int over 64 bits is sent as text)
    if peer is None or (isinstance(peer, str) and 0 < len(peer) <= MAX_PEER_CHARS):
        trusted = Parser(trust_peer=True).parse(sent, STAMP)
        assert (trusted.peer is None) is (peer is None)
        assert text_formatter(DEFAULT_PEER_FORMAT)(trusted).count("\n") == 1  # one line, whatever the name
    else:
        with pytest.raises(MalformedRecord, match="bad_extension: peer must be"):
            Parser(trust_peer=True).parse(sent, STAMP)
    republished = extension_with_peer(sent, "app1")
    assert Parser(trust_peer=True).parse(republished, STAMP).peer == "app1"


def test_many_peers_on_one_topic_keep_their_own_lines() -> None:
    render = text_formatter(DEFAULT_PEER_FORMAT)
    peers = [f"key{n}" for n in range(formatting.MAX_PEERS_PER_TOPIC + 200)]  # past the per-topic bound
    for _ in range(2):
        for peer in peers:
            assert render(record(peer=peer)) == f"{TIME} | ERROR | app1 | {peer} | - | db | timeout\n"
