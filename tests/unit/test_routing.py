"""Topic patterns, route tables and file names that nothing on the network can abuse."""

from __future__ import annotations

import pytest

from zlogcollect.routing import (
    MAX_COMPONENT_BYTES,
    Route,
    RouteError,
    Router,
    default_routes,
    match_topic,
    parse_route,
    safe_name,
)
from zlogcollect.wire import Record


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("#", "app1.ERROR.db", True),
        ("#", "INFO", True),
        ("app1.#", "app1.ERROR", True),
        ("app1.#", "app1", True),  # '#' matches zero words
        ("app1.*", "app1.ERROR", True),
        ("app1.*", "app1.ERROR.db", False),
        ("*.ERROR.#", "app1.ERROR.db.query", True),
        ("*.ERROR.#", "shop.web.ERROR", False),
        ("#.ERROR.#", "shop.web.ERROR", True),
        ("#.ERROR.#", "ERROR", True),
        ("#.ERROR", "a.b.ERROR", True),
        ("#.ERROR", "a.ERROR.b", False),
        ("app1.ERROR", "app1.ERROR", True),
        ("app1.ERROR", "app2.ERROR", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.b", True),
    ],
)
def test_match_topic_follows_amqp_topic_rules(pattern: str, topic: str, expected: bool) -> None:
    """'*' matches exactly one word and '#' zero or more, as in an AMQP topic exchange."""
    assert match_topic(pattern, topic) is expected


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("app1", "app1"),
        ("shop.web", "shop.web"),
        ("../../etc", "_._.._etc"),
        ("/etc/passwd", "_etc_passwd"),
        ("..", "_."),
        (".hidden", "_hidden"),
        ("tab\there", "tab_here"),
        ("nul\x00", "nul_"),
        ("errors", "errors_"),
        ("ERRORS", "ERRORS_"),
        ("_malformed", "_malformed_"),
        ("", "_"),
        ("é", "_"),
    ],
)
def test_safe_name(name: str, safe: str) -> None:
    """Anything outside a small alphabet becomes '_', and reserved names are moved aside."""
    assert safe_name(name) == safe


def test_safe_name_caps_length() -> None:
    """Over-long names are cut so rotation suffixes still fit in a file name."""
    assert safe_name("x" * 1000) == "x" * 100


def record(source: str, level: str = "INFO", levelno: int = 20, subtopic: str = "") -> Record:
    return Record(source, level, levelno, subtopic, "m", 0.0)


def test_default_routes_give_per_source_files_and_errors_log() -> None:
    """By default a record goes to {source}.log, and ERROR or worse also to errors.log."""
    router = Router(default_routes(), default_source="default")
    assert router.route(record("app1")) == ["app1.log"]
    assert router.route(record("app1", "ERROR", 40)) == ["app1.log", "errors.log"]
    assert router.route(record("app1", "Level 45", 45)) == ["app1.log", "errors.log"]
    assert router.route(record("", "CRITICAL", 50)) == ["default.log", "errors.log"]
    assert router.route(record("errors", "ERROR", 40)) == ["errors_.log", "errors.log"]


def test_routes_add_files_and_deduplicate() -> None:
    """Extra routes add paths in order; a path named twice is written once."""
    routes = [
        *default_routes(None),
        parse_route("app1.#={source}.log"),
        parse_route("#.db=db/{source}-{level}.log"),
    ]
    router = Router(routes)
    assert router.route(record("app1", subtopic="db")) == ["app1.log", "db/app1-INFO.log"]
    assert router.route(record("../x", subtopic="db")) == ["_._x.log", "db/_._x-INFO.log"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("noequals", "PATTERN=FILE"),
        ("=x.log", "pattern"),
        ("a.b*.c=x.log", "pattern"),
        ("a..b=x.log", "pattern"),
        ("a=../x.log", "relative path"),
        ("a=/x.log", "relative path"),
        ("a=x/../y.log", "relative path"),
        ("a=", "relative path"),
        ("a={nope}.log", "{nope}"),
        ("a={source", "file template"),
        ("a=_malformed.log", "reserved"),
        ("a=errors.log.d/../x", "relative path"),
    ],
)
def test_bad_routes_are_refused(spec: str, message: str) -> None:
    """Routes that could not work or could leave --dir fail at start-up with a clear message."""
    with pytest.raises(RouteError, match=message.replace("{", r"\{").replace("*", r"\*")):
        parse_route(spec)


def test_errors_file_may_be_routed_to_explicitly() -> None:
    """errors.log is reserved for sources, but an operator's route may name it."""
    assert parse_route("app1.WARNING=errors.log").target == "errors.log"


def test_min_level_route() -> None:
    """A route with a level threshold skips lower levels."""
    route = Route("#", "x.log", min_level=30)
    assert not route.matches(record("a"))
    assert route.matches(record("a", "WARNING", 30))


def test_sender_names_never_land_in_operator_named_files() -> None:
    """A source named like a literal route target or the errors file gets its own file instead."""
    routes = [
        *default_routes("all-errors.log"),
        parse_route("app1.ERROR.#=app1-errors.log"),
        parse_route("#={source}"),
    ]
    router = Router(routes)
    assert router.route(record("all-errors")) == ["all-errors_.log", "all-errors"]
    assert router.route(record("app1-errors", "DEBUG", 10)) == ["app1-errors_.log", "app1-errors"]
    assert router.route(record("_malformed.log")) == ["_malformed.log.log", "_malformed_.log"]
    assert router.route(record("all-errors.log", "ERROR", 40)) == [
        "all-errors.log.log",
        "all-errors.log",
        "all-errors_.log",
    ]


def test_host_and_pid_in_file_templates_are_sanitised() -> None:
    """{host} and {pid} come from the extension, sanitised like {source}; '_' when a record lacks them."""
    route = parse_route("#={host}/{source}-{pid}.log")
    meta = {"host": "web01", "pid": 4242}
    assert (
        route.path_for(Record("app1", "INFO", 20, "", "m", 0.0, meta=meta), "default")
        == "web01/app1-4242.log"
    )
    hostile = {"host": "../../etc", "pid": "1/2"}
    assert (
        route.path_for(Record("app1", "INFO", 20, "", "m", 0.0, meta=hostile), "d") == "_._.._etc/app1-_.log"
    )
    assert route.path_for(Record("app1", "INFO", 20, "", "m", 0.0), "d") == "_/app1-_.log"
    assert route.path_for(Record("a", "INFO", 20, "", "m", 0.0, meta={"host": "h" * 500}), "d") == (
        "h" * 100 + "/a-_.log"
    )


def test_router_cache_key_follows_host_and_pid_only_when_routes_use_them() -> None:
    """A caller caching paths per topic stays right when a template uses {host} or {pid}."""
    a = Record("app1", "INFO", 20, "", "m", 0.0, meta={"host": "web01", "pid": 1})
    b = Record("app1", "INFO", 20, "", "m", 0.0, meta={"host": "web02", "pid": 1})
    plain = Router(default_routes())
    assert plain.per_topic and plain.cache_key(a) == plain.cache_key(b) == "app1.INFO"
    by_host = Router([parse_route("#={host}/{source}.log")])
    assert not by_host.per_topic and by_host.cache_key(a) != by_host.cache_key(b)
    assert by_host.route(a) == ["web01/app1.log"] and by_host.route(b) == ["web02/app1.log"]
    big = Record("app1", "INFO", 20, "", "m", 0.0, meta={"host": "h" * 1_000_000})
    assert len(repr(by_host.cache_key(big))) < 300  # a peer's huge host is not kept as a key


def test_a_name_made_of_several_placeholders_is_cut_to_fit_a_file_system() -> None:
    """Found by test_fuzz: '{source}-{level}-{host}.log' with 300-character names made a 306-byte name."""
    route = Route("#", "{source}-{level}-{host}.log")
    record = Record("s" * 300, "INFO", 20, "", "m", 0.0, meta={"host": "h" * 300})
    path = route.path_for(record, "d")
    assert path == "s" * 100 + "-INFO-" + "h" * 90 + ".log"
    assert len(path) == MAX_COMPONENT_BYTES
    nested = Route("#", "{source}{source}/{host}{host}{host}")
    assert [len(part) for part in nested.path_for(record, "d").split("/")] == [200, 200]
    # An operator's own non-ASCII text is cut on a character boundary, the extension kept.
    wide = Route("#", "\u00e9" * 60 + "{source}.log").path_for(record, "d")
    assert wide == "\u00e9" * 60 + "s" * 76 + ".log" and len(wide.encode()) == MAX_COMPONENT_BYTES
