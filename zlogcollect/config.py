"""Collector settings: one frozen dataclass, TOML loading, and one-line errors naming the setting."""

from __future__ import annotations

import datetime
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from zlogcollect import formatting, privileges
from zlogcollect.options import AMQP, FILES, RECEIVE, Option, at_least, render_example, setting, table
from zlogcollect.routing import (
    ERRORS_FILE,
    Route,
    RouteError,
    default_routes,
    parse_route,
    validate_target,
)
from zlogcollect.sinks.amqp_message import validate_routing_key
from zlogcollect.wire import MAX_RECORD_BYTES, Levels

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_ENDPOINT: Final = "tcp://127.0.0.1:5558"
PUBLISH_ENDPOINT: Final = "tcp://127.0.0.1:5559"
"""The conventional ``--publish`` endpoint (documented; ``--publish`` itself is off by default)
and ``zlogcollect tail``'s default ``--connect``."""
_WHEN = re.compile(r"(?i)S|M|H|D|MIDNIGHT|W[0-6]")
_ENDPOINT = re.compile(r"(tcp|ipc|inproc|pgm|epgm|vmci)://.+")
# tcp://HOST:PORT: HOST an address, interface name, hostname, [IPv6] or *; PORT digits or *.
# libzmq's own "Invalid argument" at bind time says nothing about which part is wrong.
_TCP_ENDPOINT = re.compile(r"tcp://(?:[^\s;:/\[\]]+|\[[0-9A-Fa-f:.%\w]+\]|\*):(?:\d+|\*)")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_FILE_WORD = re.compile(r"[A-Za-z0-9._@+-]+")


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming the setting and value."""


# The checks the table names: each says what is wrong with one value (after "NAME = VALUE: "), or None.


def _check_when(value: str) -> str | None:
    return None if _WHEN.fullmatch(value) else "expected S, M, H, D, midnight or W0-W6"


def _check_time_of_day(value: str | None) -> str | None:
    if not value:
        return None
    try:
        datetime.time.fromisoformat(value)
    except ValueError:
        return "expected HH:MM or HH:MM:SS"
    return None


def _check_flush_interval(value: float) -> str | None:
    return None if 0 < value <= 60 else "expected more than 0 and at most 60 s"


def _check_flush_delay(value: float) -> str | None:
    return None if 0 <= value <= 60 else "expected 0 to 60 s"


HTTP_PORT: Final = 9559
"""The conventional port of ``--http`` (documented; ``--http`` itself is off by default)."""
_HTTP_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]|\*")


def parse_http_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` of ``--http`` as a (host, port) pair; ValueError says what is wrong.

    HOST is an address, a host name, ``[IPv6]`` or ``*`` (every IPv4 interface);
    PORT is 0 (any free port, shown on the ready line) to 65535.
    """
    if "://" in value:
        raise ValueError("expected HOST:PORT without a scheme, e.g. 127.0.0.1:9559")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not _HTTP_HOST.fullmatch(host):
        raise ValueError(
            f"expected HOST:PORT, e.g. 127.0.0.1:{HTTP_PORT}, [::1]:{HTTP_PORT} or *:{HTTP_PORT}"
        )
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number from 0 to 65535")
    if host == "*":
        host = "0.0.0.0"
    return host.strip("[]"), int(port)


def _check_http(value: str) -> str | None:
    if not value:
        return None
    try:
        parse_http_address(value)
    except ValueError as exc:
        return str(exc)
    return None


def _check_window(value: int) -> str | None:
    return None if 1 <= value <= 100_000 else "expected 1 to 100000 records"


def _check_file_word(value: str) -> str | None:
    if value and _FILE_WORD.fullmatch(value) and not value.startswith("."):
        return None
    return "expected a plain file-name word"


@dataclass(frozen=True)
class CollectorConfig:
    """Everything ``zlogcollect collect`` can be told, by flag or by TOML key of the same name.

    Each field is declared once with its :class:`Option`: adding a setting is adding a field here.
    """

    # Receive side (collect and bridge).
    bind: tuple[str, ...] = setting(
        (DEFAULT_ENDPOINT,),
        "Endpoint the SUB socket binds; apps connect their PUB handler here,"
        " e.g. tcp://*:5558 or ipc:///run/zlogcollect/log.sock.",
        RECEIVE,
        metavar="ENDPOINT",
    )
    subscribe: tuple[str, ...] = setting(
        (), "Accept only topics with this prefix; none given = everything.", RECEIVE, metavar="PREFIX"
    )
    max_record_bytes: int = setting(
        MAX_RECORD_BYTES,
        "Records larger than this (topic + text + extension) are quarantined in _malformed.log.",
        RECEIVE,
        metavar="N",
        check=at_least(64),
    )
    rcvhwm: int = setting(
        20_000,
        "Records the SUB socket may queue per sender before ZeroMQ drops; 0 = no limit.",
        RECEIVE,
        metavar="N",
        check=at_least(0),
    )
    drain_timeout: float = setting(
        5.0,
        "Seconds to keep receiving (and confirming) after SIGTERM before exiting.",
        RECEIVE,
        metavar="SECONDS",
        check=at_least(0),
    )
    log_level: str = setting(
        "INFO",
        "The collector's own diagnostics on stderr.",
        RECEIVE,
        choices=_LOG_LEVELS,
        case_sensitive=False,
    )
    stats_interval: float = setting(
        0.0,
        "Print the counters line to stderr every this many seconds; 0 = only on SIGUSR1 and at exit.",
        RECEIVE,
        metavar="SECONDS",
        check=at_least(0, "0 = off"),
    )
    stats_file: str = setting(
        "",
        "Also write the counters as JSON to this file, atomically, whenever the line is printed;"
        " '' = _stats.json in --dir (collect; the bridge writes none unless told).",
        RECEIVE,
        metavar="PATH",
    )
    http: str = setting(
        "",
        "Serve the live web viewer (/, /events, /sources), Prometheus metrics (/metrics) and a health"
        " check (/healthz) over HTTP on HOST:PORT, and (collect) a search over the files in --dir"
        " (/search, /context: docs/WEB.md);"
        f" the conventional port is {HTTP_PORT} (e.g. 127.0.0.1:{HTTP_PORT}); '' = off.",
        RECEIVE,
        metavar="HOST:PORT",
        check=_check_http,
    )
    http_window: int = setting(
        10_000,
        "With --http: the live stream's window, the last N accepted records kept in memory for"
        " /events (backlog when a page opens, resume after a reconnect); at most 100000.",
        RECEIVE,
        metavar="N",
        check=_check_window,
    )
    http_auth_file: str = setting(
        "",
        "With --http: a file of token=SECRET and/or user=NAME and password=SECRET lines; every path"
        " then needs that bearer token or basic auth. Or set ZLOGCOLLECT_HTTP_TOKEN, or"
        " ZLOGCOLLECT_HTTP_USER and ZLOGCOLLECT_HTTP_PASSWORD; never on the command line."
        " '' and none of those = no auth.",
        RECEIVE,
        metavar="FILE",
    )
    http_open_metrics: bool = setting(
        False,
        "With HTTP auth on: let /metrics and /healthz be read without credentials (for a Prometheus"
        " server or a load balancer's health check).",
        RECEIVE,
    )
    publish: tuple[str, ...] = setting(
        (),
        "Republish every accepted record (the handler's own frames) on an XPUB socket bound here, for"
        f" `zlogcollect tail`; the conventional endpoint is {PUBLISH_ENDPOINT}; none given = off."
        " The files never wait for a subscriber: records it cannot take are dropped and counted.",
        RECEIVE,
        metavar="ENDPOINT",
    )
    publish_hwm: int = setting(
        10_000,
        "Records --publish may queue per subscriber; beyond it records are dropped (for every"
        " subscriber) and counted, never waited for.",
        RECEIVE,
        metavar="N",
        check=at_least(1),
    )
    curve_secret: str = setting(
        "",
        "CURVE: this collector's certificate (a NAME.key_secret file from `zlogcollect keygen`); every"
        " bound endpoint becomes an encrypting CURVE server that admits only the keys in --allow-keys."
        " '' = off (plain ZeroMQ: anyone who reaches the port may write).",
        RECEIVE,
        metavar="FILE",
        heading="Security: CURVE encryption and an allow-list of app keys (docs/SECURITY.md).",
    )
    allow_keys: str = setting(
        "",
        "CURVE: a directory of the apps' public NAME.key files; only those keys may connect, and each"
        " record is marked with its key's NAME (the peer). SIGHUP re-reads it.",
        RECEIVE,
        metavar="DIR",
    )
    allow_ip: tuple[str, ...] = setting(
        (),
        "Accept TCP connections only from this address or CIDR network (repeatable; ipc:// peers are"
        " not affected); with or without CURVE.",
        RECEIVE,
        metavar="CIDR",
    )
    source_from_peer: bool = setting(
        False,
        "CURVE: file each record under its peer's name instead of the source its topic claims, so a"
        " key can only ever write into its own files (the secure choice when apps do not trust each other).",
        RECEIVE,
    )
    publish_allow_keys: str = setting(
        "",
        "CURVE on --publish too: only readers (`zlogcollect tail`) whose public NAME.key is in this"
        " directory may subscribe; needs --curve-secret. '' = --publish is plain.",
        RECEIVE,
        metavar="DIR",
    )
    levels: Mapping[str, int] = setting(
        {},
        "A custom level name senders use in topics, with its number (NAME=NUMBER, e.g. TRACE=5).",
        RECEIVE,
        flag="--level",
        metavar="NAME=NUMBER",
        samples=(("TRACE", 5), ("SUCCESS", 25)),
    )
    # Who runs it (collect and bridge): as root, endpoints other hosts reach need one of these.
    user: str = setting(
        "",
        "Started as root: drop to this user (a name or uid; its primary and supplementary groups)"
        " once every endpoint is bound, before any file under --dir is opened; '' = stay who it is."
        " Better still: User= in the systemd unit.",
        RECEIVE,
        metavar="NAME",
    )
    allow_root: bool = setting(
        False,
        "Run as root even with endpoints (--bind, --publish, --http) that other hosts can reach;"
        " without it (or --user) that is refused with exit 77. Loopback and ipc only start as"
        " root with a warning.",
        RECEIVE,
    )
    # The file sink (collect only).
    dir: str = setting(
        "logs",
        "Directory for the log files, created if missing.",
        FILES,
        metavar="DIR",
        heading="Files: `zlogcollect collect` writes them; `zlogcollect bridge` ignores these keys.",
    )
    default_source: str = setting(
        "default",
        "Records without a root topic are written as if sent by this source.",
        FILES,
        metavar="NAME",
        check=_check_file_word,
    )
    default_routes: bool = setting(
        True, "Keep the built-in routes: one file per source ({source}.log) and errors_file.", FILES
    )
    errors_file: str = setting(
        ERRORS_FILE,
        "ERROR and worse from every source also go here; '' switches it off.",
        FILES,
        metavar="FILE",
    )
    route: tuple[str, ...] = setting(
        (),
        "Also write records whose topic matches PATTERN to FILE, as PATTERN=FILE. PATTERN uses AMQP"
        " wildcards against the topic (* = one word, # = zero or more); FILE may use {source},"
        " {level}, {host}, {pid} and {peer} (CURVE).",
        FILES,
        metavar="PATTERN=FILE",
        samples=("app1.ERROR.#=app1-errors.log", "*.*.db.#=db/{source}-{level}.log"),
    )
    when: str = setting(
        "midnight",
        "Rotate on S, M, H, D, midnight or W0-W6 (Monday-Sunday), as TimedRotatingFileHandler.",
        FILES,
        metavar="WHEN",
        heading="Rotation, exactly as logging.handlers.TimedRotatingFileHandler.",
        check=_check_when,
    )
    interval: int = setting(1, "Rotate every INTERVAL units of when.", FILES, check=at_least(1))
    backup_count: int = setting(
        0, "Rotated files to keep per log; 0 keeps every rotated file.", FILES, check=at_least(0)
    )
    utc: bool = setting(
        False, "Rotate and stamp in UTC rather than local time.", FILES, flag="--utc/--local-time"
    )
    at_time: str | None = setting(
        None,
        "Time of day for midnight/W* rotation.",
        FILES,
        metavar="HH:MM[:SS]",
        samples=("00:00:00",),
        check=_check_time_of_day,
    )
    compress: bool = setting(False, "Gzip rotated files.", FILES)
    format: str = setting(
        formatting.DEFAULT_FORMAT,
        "%-style line format; a name that is no known field is an extra= field of the record.",
        FILES,
        metavar="FMT",
        heading="Line format (%-style) or one JSON object per line.",
    )
    json: bool = setting(
        False, "Write one JSON object per line instead of text.", FILES, flag="--json/--text"
    )
    multiline: str = setting(
        "prefix",
        "Continuation lines of a record (tracebacks): prefix starts them with 'TIME | SOURCE + ',"
        " plain writes them as sent.",
        FILES,
        choices=formatting.MULTILINE_MODES,
    )
    flush_interval: float = setting(
        1.0,
        "Batched writes: the longest a line waits in memory under continuous load.",
        FILES,
        metavar="SECONDS",
        check=_check_flush_interval,
    )
    flush_delay: float = setting(
        0.005,
        "Group commit: once the socket runs dry, lines wait this long for others to share their"
        " write; raise it to trade latency for fewer writes.",
        FILES,
        metavar="SECONDS",
        check=_check_flush_delay,
    )
    max_files: int = setting(
        10_000,
        "Most distinct files; records for further ones go to _overflow.log (a peer inventing sources"
        " must not exhaust inodes or memory).",
        FILES,
        metavar="N",
        check=at_least(3, "two are the collector's own"),
    )
    file_mode: str = setting(
        f"{privileges.FILE_MODE:04o}",
        "Octal mode of every log file the collector creates (rotated and .gz backups keep it),"
        " whatever the umask; files that exist already are left as they are. State files get at"
        " most 0640.",
        FILES,
        metavar="MODE",
        check=privileges.file_mode_problem,
    )
    dir_mode: str = setting(
        f"{privileges.DIR_MODE:04o}",
        "Octal mode of every directory the collector creates (--dir and route subdirectories),"
        " whatever the umask; existing directories are left as they are.",
        FILES,
        metavar="MODE",
        check=privileges.dir_mode_problem,
    )
    # The AMQP bridge (needs the `amqp` extra: pika).
    amqp_url: str = setting(
        "",
        "Forward every record to RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/%2F; '' = off.",
        AMQP,
        metavar="URL",
        envvar="ZLOGCOLLECT_AMQP_URL",
        heading="The AMQP bridge (install with the amqp extra, pip install '.[amqp]'): forward every"
        " record to RabbitMQ as JSON with publisher confirms. Off while amqp_url is empty.",
    )
    amqp_url_file: str = setting(
        "",
        "Or read the AMQP URL (with its password) from the first line of FILE, e.g. a systemd"
        " credential: it stays out of ps and the unit.",
        AMQP,
        metavar="FILE",
    )
    amqp_node: tuple[str, ...] = setting(
        (),
        "Another node of the broker's cluster, HOST:PORT (repeatable): when the current node fails,"
        " the bridge (or the writer) connects to the next one, with the URL's user, password, vhost and TLS.",
        AMQP,
        metavar="HOST:PORT",
        samples=("rabbit2.example.com:5672",),
    )
    exchange: str = setting("amq.topic", "Exchange to publish to.", AMQP, metavar="NAME")
    exchange_type: str = setting(
        "topic",
        "Type used when declaring the exchange.",
        AMQP,
        choices=("topic", "direct", "fanout", "headers"),
    )
    declare_exchange: bool = setting(
        False, "Declare the exchange (durable); otherwise it must already exist (amq.* always do).", AMQP
    )
    routing_key: str = setting(
        "",
        "Routing key template from {source} {level} {subtopic} {topic} {name} {peer}; '{topic}' for the"
        " whole topic; '' = {source}.{level}.",
        AMQP,
        metavar="TEMPLATE",
    )
    only: tuple[str, ...] = setting(
        (), "Forward only topics matching PATTERN; none given = all.", AMQP, metavar="PATTERN"
    )
    declare_queue: tuple[str, ...] = setting(
        (),
        "Declare a durable queue and bind it: NAME=BINDING[,BINDING], e.g. app1-error=app1.ERROR.#.",
        AMQP,
        metavar="NAME=BINDING[,BINDING]",
        samples=("app1-error=app1.ERROR.#",),
    )
    queue_type: str = setting(
        "classic", "Type of declared queues.", AMQP, choices=("classic", "quorum", "stream")
    )
    dead_letter_exchange: str = setting(
        "", "x-dead-letter-exchange for declared queues; '' = none.", AMQP, metavar="NAME"
    )
    message_ttl: int = setting(
        0, "x-message-ttl for declared queues, in ms; 0 = none.", AMQP, metavar="MS", check=at_least(0)
    )
    max_length: int = setting(
        0,
        "x-max-length for declared queues, in messages; 0 = unlimited.",
        AMQP,
        metavar="N",
        check=at_least(0),
    )
    buffer: int = setting(
        100_000, "Records held while the broker is unreachable.", AMQP, metavar="N", check=at_least(1)
    )
    overflow: str = setting(
        "drop-oldest", "What a full buffer drops (and counts).", AMQP, choices=("drop-oldest", "drop-newest")
    )
    refresh: float = setting(
        0.0,
        "Reconnect this often (seconds), for load balancers; 0 = never.",
        AMQP,
        metavar="SECONDS",
        check=at_least(0),
    )
    heartbeat: int = setting(30, "AMQP heartbeat, seconds.", AMQP, metavar="SECONDS", check=at_least(0))
    mandatory: bool = setting(
        True, "Publish as mandatory and count records no queue was bound for as unroutable.", AMQP
    )
    # The writer: `collect --from-amqp` (needs the `amqp` extra: pika).
    from_amqp: str = setting(
        "",
        "Write what bridges sent to RabbitMQ instead of receiving over ZeroMQ: consume every --queue"
        " at this URL, e.g. amqp://zlog:PASSWORD@rabbit1:5672/%2F; '' = off (receive on --bind).",
        FILES,
        metavar="URL",
        envvar="ZLOGCOLLECT_FROM_AMQP",
        heading="The writer (install with the amqp extra): write what bridges sent to RabbitMQ, acking"
        " each message once its line is on disk. Off while from_amqp is empty.",
    )
    queue: tuple[str, ...] = setting(
        (),
        "A queue the writer consumes, e.g. zlogcollect.shard.0; it must exist.",
        FILES,
        metavar="NAME",
        samples=("zlogcollect.shard.0",),
    )
    prefetch: int = setting(
        1000,
        "Messages the broker hands the writer before it acks; it acks in batches of half of them.",
        FILES,
        metavar="N",
        check=at_least(1),
    )
    dedup_window: int = setting(
        100_000,
        "Message ids the writer remembers (in --dir, across restarts) to drop repeated deliveries.",
        FILES,
        metavar="N",
        check=at_least(1),
    )

    @property
    def routes(self) -> list[Route]:
        """The route table: the defaults (unless switched off), then every ``route`` rule."""
        routes = default_routes(self.errors_file or None) if self.default_routes else []
        return routes + [parse_route(spec) for spec in self.route]

    @property
    def at_time_value(self) -> datetime.time | None:
        """``at_time`` as a :class:`datetime.time` (validated at load)."""
        return datetime.time.fromisoformat(self.at_time) if self.at_time else None

    @property
    def queue_arguments(self) -> dict[str, object]:
        """x-arguments for declared queues (dead-lettering, TTL, length)."""
        arguments: dict[str, object] = {}
        if self.dead_letter_exchange:
            arguments["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.message_ttl:
            arguments["x-message-ttl"] = self.message_ttl
        if self.max_length:
            arguments["x-max-length"] = self.max_length
        return arguments

    @property
    def http_address(self) -> tuple[str, int] | None:
        """``http`` as (host, port), or None when it is off (validated at load)."""
        return parse_http_address(self.http) if self.http else None

    @property
    def file_mode_value(self) -> int:
        """``file_mode`` as a number (validated at load)."""
        return privileges.parse_mode(self.file_mode)

    @property
    def dir_mode_value(self) -> int:
        """``dir_mode`` as a number (validated at load)."""
        return privileges.parse_mode(self.dir_mode)

    @property
    def level_table(self) -> Levels:
        """The level names recognised in topics."""
        return Levels(self.levels)


OPTIONS: Final = table(CollectorConfig)
"""Every setting, in the order of ``--help`` and of the TOML example."""
_BY_NAME: Final = {option.name: option for option in OPTIONS}


def parse_queue(spec: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=BINDING[,BINDING...]`` from ``--declare-queue``."""
    name, sep, bindings = spec.partition("=")
    keys = tuple(b.strip() for b in bindings.split(",") if b.strip())
    if not sep or not name.strip() or not keys:
        raise ConfigError(
            f"declare_queue = {spec!r}: expected NAME=BINDING[,BINDING...], e.g. app1-error=app1.ERROR.#"
        )
    return name.strip(), keys


def redact(url: str) -> str:
    """The URL with its password replaced, for every line a person reads."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparseable URL)"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def validate_amqp_url(url: str, name: str = "amqp_url") -> None:
    """Check an AMQP URL (the setting *name*'s) without connecting; the error never shows the password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's own message can quote part of the password: never show it.
        raise ConfigError(
            f"{name}: not a valid URL (is the port a number? percent-encode / # ? @ in the user or password)"
        ) from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(f"{name} = {redact(url)!r}: expected amqp://USER:PASSWORD@HOST[:PORT]/VHOST")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"{name}: port {port} is out of range")


def node_urls(url: str, nodes: tuple[str, ...]) -> list[str]:
    """*url*, then *url* with each of *nodes* (``HOST:PORT``) as its host and port: the bridge's
    connection order. :class:`ConfigError` for a node that is not ``HOST:PORT``."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    urls = [url]
    for node in nodes:
        host, sep, port = node.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if (
            not sep
            or not bare
            or not port.isdigit()
            or not 0 < int(port) < 65536
            or any(c in bare for c in "/@?#[] ")
        ):
            raise ConfigError(f"amqp_node = {node!r}: expected HOST:PORT, e.g. rabbit2.example.com:5672")
        urls.append(urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{port}")))
    return urls


def read_url_file(path: str) -> str:
    """The AMQP URL from the first line of *path*, so the password stays out of ``ps`` and the unit."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline(64 * 1024).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"amqp_url_file = {path!r}: cannot read it: {reason}") from None
    if not first:
        raise ConfigError(f"amqp_url_file = {path!r}: the first line is empty; expected an amqp:// URL")
    return first


def _expect(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{name} = {value!r}: expected {what}")
    if not isinstance(value, kind):
        raise ConfigError(f"{name} = {value!r}: expected {what}")
    return value


_SCALARS: Final[dict[type, tuple[type | tuple[type, ...], str]]] = {
    bool: (bool, "true or false"),
    int: (int, "a whole number"),
    float: ((int, float), "a number"),
    str: (str, "a string"),
}


def _coerce(option: Option, value: Any) -> Any:
    name, kind = option.name, option.kind
    if kind is dict:
        _expect(name, value, dict, "a table of NAME = number")
        for key, number in value.items():
            _expect(f"{name}.{key}", number, int, "a whole number")
        return dict(value)
    if kind is tuple:
        if isinstance(value, str):
            value = [value]
        _expect(name, value, (list, tuple), "a list of strings")
        for item in value:
            _expect(name, item, str, "a list of strings")
        return tuple(value)
    accepted, what = _SCALARS[kind]
    value = _expect(name, value, accepted, what)
    return float(value) if kind is float else value


def from_mapping(values: Mapping[str, Any]) -> CollectorConfig:
    """Build and validate a config; unknown keys and bad values raise :class:`ConfigError`."""
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        option = _BY_NAME.get(name.replace("-", "_"))
        if option is None:
            raise ConfigError(f"unknown setting {name!r}; run 'zlogcollect config' for the list")
        if value is None and option.default is None:
            continue
        kwargs[option.name] = _coerce(option, value)
    if kwargs.get("amqp_url_file"):
        if kwargs.get("amqp_url"):
            raise ConfigError("amqp_url_file: give either amqp_url or amqp_url_file, not both")
        kwargs["amqp_url"] = read_url_file(kwargs["amqp_url_file"])
    config = CollectorConfig(**kwargs)
    validate(config)
    return config


def validate(config: CollectorConfig) -> None:
    """Check every value that can be checked before binding anything."""
    _check_endpoints("bind", config.bind)
    _check_endpoints("publish", config.publish, required=False)
    _check_each_setting(config)
    _check_routes_and_format(config)
    _check_amqp(config)
    _check_access(config)


def _check_access(config: CollectorConfig) -> None:
    """The security settings that go together (the files themselves are read at start-up)."""
    from zlogcollect.access import AccessError, parse_networks

    if bool(config.curve_secret) != bool(config.allow_keys):
        given, missing = (
            ("curve_secret", "allow_keys") if config.curve_secret else ("allow_keys", "curve_secret")
        )
        raise ConfigError(
            f"{given} needs {missing} too: CURVE takes the collector's secret and the allowed keys"
        )
    if config.source_from_peer and not config.curve_secret:
        raise ConfigError(
            "source_from_peer needs curve_secret and allow_keys: without CURVE there is no peer"
        )
    if config.publish_allow_keys and not config.curve_secret:
        raise ConfigError("publish_allow_keys needs curve_secret: --publish uses the collector's certificate")
    if config.http_auth_file and not config.http:
        raise ConfigError("http_auth_file needs http: there is no --http endpoint to guard")
    if config.publish_allow_keys and not config.publish:
        raise ConfigError("publish_allow_keys needs publish: there is no --publish endpoint to guard")
    try:
        parse_networks(config.allow_ip)
    except AccessError as exc:
        raise ConfigError(str(exc)) from None


def _check_endpoints(name: str, endpoints: tuple[str, ...], required: bool = True) -> None:
    """Endpoints to bind (``bind``, ``publish``): the same shapes, the same one-line errors."""
    if required and not endpoints:
        raise ConfigError(f"{name}: at least one endpoint is needed")
    port_example = "5558" if name == "bind" else "5559"
    for endpoint in endpoints:
        port = endpoint.rsplit(":", 1)[-1] if endpoint.startswith("tcp://") else ""
        if port.isdigit() and not 0 < int(port) < 65536:
            raise ConfigError(f"{name} = {endpoint!r}: port {port} is out of range (1-65535)")
        if not _ENDPOINT.fullmatch(endpoint):
            raise ConfigError(
                f"{name} = {endpoint!r}: expected an endpoint like tcp://127.0.0.1:{port_example}"
                " or ipc:///run/x.sock"
            )
        if endpoint.startswith("tcp://") and not _TCP_ENDPOINT.fullmatch(endpoint):
            raise ConfigError(
                f"{name} = {endpoint!r}: expected tcp://HOST:PORT (an address, interface or * and a port"
                f" number or *), e.g. tcp://127.0.0.1:{port_example} or tcp://*:{port_example}"
            )


def _check_each_setting(config: CollectorConfig) -> None:
    """The checks one value decides alone, as declared in the table: choices, limits, shapes."""
    for option in OPTIONS:
        value = getattr(config, option.name)
        complaint = option.complaint(value)
        if complaint is not None:
            raise ConfigError(f"{option.name} = {value!r}: {complaint}")


def _check_routes_and_format(config: CollectorConfig) -> None:
    try:
        config.level_table  # noqa: B018 - builds the table to validate it
    except ValueError as exc:
        raise ConfigError(f"levels: {exc}") from None
    try:
        if config.errors_file:
            validate_target(config.errors_file)
        config.routes  # noqa: B018 - parses every route to validate it
    except RouteError as exc:
        raise ConfigError(f"route: {exc}") from None
    if not config.default_routes and not config.route:
        raise ConfigError("route: default routes are off and no route is given, so nothing would be written")
    if not config.json:
        try:
            formatting.text_formatter(config.format)
        except formatting.FormatError as exc:
            raise ConfigError(f"format: {exc}") from None


def _check_writer(config: CollectorConfig) -> None:
    """``from_amqp``: a URL, at least one queue, and none of the options of a receiving collector it ignores."""
    validate_amqp_url(config.from_amqp, "from_amqp")
    node_urls(config.from_amqp, config.amqp_node)
    if not config.queue:
        raise ConfigError("from_amqp: give the queue(s) to consume with --queue NAME (repeatable)")
    for name in config.queue:
        if not name or len(name.encode()) > 255:
            raise ConfigError(f"queue = {name!r}: expected a queue name of 1 to 255 bytes")
    if config.amqp_url:
        raise ConfigError("from_amqp: a writer does not forward; give either from_amqp or amqp_url")
    if config.publish:
        raise ConfigError("from_amqp: a writer does not republish (--publish); tail the bridges instead")
    if config.bind != CollectorConfig().bind:
        raise ConfigError("from_amqp: a writer binds no socket (--bind); the bridges take the apps' records")
    if config.curve_secret or config.allow_keys or config.allow_ip:
        raise ConfigError(
            "from_amqp: a writer has no socket to guard (curve_secret, allow_keys, allow_ip); set them on the bridges"
        )
    if config.prefetch > 65535:
        raise ConfigError(f"prefetch = {config.prefetch}: expected at most 65535")


def _check_amqp(config: CollectorConfig) -> None:
    if config.from_amqp:
        _check_writer(config)
    if config.amqp_url:
        validate_amqp_url(config.amqp_url)
        node_urls(config.amqp_url, config.amqp_node)
    elif config.amqp_node and not config.from_amqp:
        raise ConfigError("amqp_node: give the first node with amqp_url (or amqp_url_file, or from_amqp)")
    if config.queue and not config.from_amqp:
        raise ConfigError("queue: the queues to consume need from_amqp (the writer)")
    if not config.exchange:
        raise ConfigError("exchange: must not be empty")
    for spec in config.declare_queue:
        parse_queue(spec)
    for pattern in config.only:
        try:
            Route(pattern, "x.log")
        except RouteError as exc:
            raise ConfigError(f"only: {exc}") from None
    if config.routing_key:
        try:
            validate_routing_key(config.routing_key)
        except RouteError as exc:
            raise ConfigError(f"routing_key: {exc}") from None


def load_file(path: str) -> dict[str, Any]:
    """Read a TOML config file into a plain mapping (validated later, with the flags merged)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config {path!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path!r}: {exc}") from None
    # Accept both a flat file and one with the settings under [collect].
    section = data.pop("collect", None)
    if isinstance(section, dict):
        data = {**data, **section}
    return data


def log_level_number(name: str) -> int:
    """The stdlib number for the collector's own ``--log-level``."""
    return int(logging.getLevelName(name.upper()))


_EXAMPLE_HEADER: Final = """\
# zlogcollect collector configuration (TOML). Every key mirrors a
# `zlogcollect collect` flag (dashes become underscores; levels is --level);
# flags given on the command line win over this file. Values shown are the defaults.
"""


EXAMPLE: Final = render_example(OPTIONS, _EXAMPLE_HEADER)
"""What `zlogcollect config` prints: every setting with its help and its default."""
