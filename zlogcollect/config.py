"""Collector settings: one frozen dataclass, TOML loading, and one-line errors naming the setting."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from zlogcollect import formatting
from zlogcollect.routing import (
    ERRORS_FILE,
    Route,
    RouteError,
    default_routes,
    parse_route,
    validate_routing_key,
    validate_target,
)
from zlogcollect.wire import MAX_RECORD_BYTES, Levels

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_ENDPOINT: Final = "tcp://127.0.0.1:5558"
_WHEN = re.compile(r"(?i)S|M|H|D|MIDNIGHT|W[0-6]")
_ENDPOINT = re.compile(r"(tcp|ipc|inproc|pgm|epgm|vmci)://.+")
# tcp://HOST:PORT: HOST an address, interface name, hostname, [IPv6] or *; PORT digits or *.
# libzmq's own "Invalid argument" at bind time says nothing about which part is wrong.
_TCP_ENDPOINT = re.compile(r"tcp://(?:[^\s;:/\[\]]+|\[[0-9A-Fa-f:.%\w]+\]|\*):(?:\d+|\*)")
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming the setting and value."""


@dataclass(frozen=True)
class CollectorConfig:
    """Everything ``zlogcollect collect`` can be told, by flag or by TOML key of the same name."""

    bind: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    subscribe: tuple[str, ...] = ()
    dir: str = "logs"
    route: tuple[str, ...] = ()
    default_routes: bool = True
    errors_file: str = ERRORS_FILE
    default_source: str = "default"
    when: str = "midnight"
    interval: int = 1
    backup_count: int = 0
    utc: bool = False
    at_time: str | None = None
    compress: bool = False
    format: str = formatting.DEFAULT_FORMAT
    json: bool = False
    multiline: str = "prefix"
    flush_interval: float = 1.0
    max_files: int = 10_000
    max_record_bytes: int = MAX_RECORD_BYTES
    levels: Mapping[str, int] = field(default_factory=dict)
    drain_timeout: float = 5.0
    rcvhwm: int = 20_000
    log_level: str = "INFO"
    stats_interval: float = 0.0
    stats_file: str = ""
    # The AMQP bridge (needs the `amqp` extra: pika).
    amqp_url: str = ""
    amqp_url_file: str = ""
    exchange: str = "amq.topic"
    exchange_type: str = "topic"
    declare_exchange: bool = False
    routing_key: str = ""
    only: tuple[str, ...] = ()
    declare_queue: tuple[str, ...] = ()
    queue_type: str = "classic"
    dead_letter_exchange: str = ""
    message_ttl: int = 0
    max_length: int = 0
    buffer: int = 100_000
    overflow: str = "drop-oldest"
    refresh: float = 0.0
    heartbeat: int = 30
    mandatory: bool = True

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
    def level_table(self) -> Levels:
        """The level names recognised in topics."""
        return Levels(self.levels)


_FIELDS: Final = {f.name: f for f in dataclasses.fields(CollectorConfig)}


_QUEUE_TYPES: Final = ("classic", "quorum", "stream")
_EXCHANGE_TYPES: Final = ("topic", "direct", "fanout", "headers")
_OVERFLOW: Final = ("drop-oldest", "drop-newest")


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


def validate_amqp_url(url: str) -> None:
    """Check an AMQP URL without connecting; the error never shows the password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib's own message can quote part of the password: never show it.
        raise ConfigError(
            "amqp_url: not a valid URL (is the port a number? percent-encode / # ? @ in the user or password)"
        ) from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(f"amqp_url = {redact(url)!r}: expected amqp://USER:PASSWORD@HOST[:PORT]/VHOST")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"amqp_url: port {port} is out of range")


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


def _coerce(name: str, value: Any) -> Any:
    default = _FIELDS[name].default
    if name == "levels":
        _expect(name, value, dict, "a table of NAME = number")
        for key, number in value.items():
            _expect(f"levels.{key}", number, int, "a whole number")
        return dict(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        _expect(name, value, (list, tuple), "a list of strings")
        for item in value:
            _expect(name, item, str, "a list of strings")
        return tuple(value)
    if isinstance(default, bool):
        return _expect(name, value, bool, "true or false")
    if isinstance(default, int):
        return _expect(name, value, int, "a whole number")
    if isinstance(default, float):
        return float(_expect(name, value, (int, float), "a number"))
    return _expect(name, value, str, "a string")


def from_mapping(values: Mapping[str, Any]) -> CollectorConfig:
    """Build and validate a config; unknown keys and bad values raise :class:`ConfigError`."""
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = name.replace("-", "_")
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r}; run 'zlogcollect config' for the list")
        if value is None and key == "at_time":
            continue
        kwargs[key] = _coerce(key, value)
    if kwargs.get("amqp_url_file"):
        if kwargs.get("amqp_url"):
            raise ConfigError("amqp_url_file: give either amqp_url or amqp_url_file, not both")
        kwargs["amqp_url"] = read_url_file(kwargs["amqp_url_file"])
    config = CollectorConfig(**kwargs)
    validate(config)
    return config


def validate(config: CollectorConfig) -> None:
    """Check every value that can be checked before binding anything."""
    if not config.bind:
        raise ConfigError("bind: at least one endpoint is needed")
    for endpoint in config.bind:
        port = endpoint.rsplit(":", 1)[-1] if endpoint.startswith("tcp://") else ""
        if port.isdigit() and not 0 < int(port) < 65536:
            raise ConfigError(f"bind = {endpoint!r}: port {port} is out of range (1-65535)")
        if not _ENDPOINT.fullmatch(endpoint):
            raise ConfigError(
                f"bind = {endpoint!r}: expected an endpoint like tcp://127.0.0.1:5558 or ipc:///run/x.sock"
            )
        if endpoint.startswith("tcp://") and not _TCP_ENDPOINT.fullmatch(endpoint):
            raise ConfigError(
                f"bind = {endpoint!r}: expected tcp://HOST:PORT (an address, interface or * and a port"
                " number or *), e.g. tcp://127.0.0.1:5558 or tcp://*:5558"
            )
    if not _WHEN.fullmatch(config.when):
        raise ConfigError(f"when = {config.when!r}: expected S, M, H, D, midnight or W0-W6")
    if config.interval < 1:
        raise ConfigError(f"interval = {config.interval}: must be at least 1")
    if config.backup_count < 0:
        raise ConfigError(f"backup_count = {config.backup_count}: must not be negative")
    if not 0 < config.flush_interval <= 60:
        raise ConfigError(f"flush_interval = {config.flush_interval}: expected more than 0 and at most 60 s")
    if config.drain_timeout < 0:
        raise ConfigError(f"drain_timeout = {config.drain_timeout}: must not be negative")
    if config.max_record_bytes < 64:
        raise ConfigError(f"max_record_bytes = {config.max_record_bytes}: must be at least 64")
    if config.max_files < 3:
        raise ConfigError(f"max_files = {config.max_files}: must be at least 3 (two are the collector's own)")
    if config.stats_interval < 0:
        raise ConfigError(f"stats_interval = {config.stats_interval}: must not be negative (0 = off)")
    if config.rcvhwm < 0:
        raise ConfigError(f"rcvhwm = {config.rcvhwm}: must not be negative")
    if config.at_time:
        try:
            datetime.time.fromisoformat(config.at_time)
        except ValueError:
            raise ConfigError(f"at_time = {config.at_time!r}: expected HH:MM or HH:MM:SS") from None
    if config.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"log_level = {config.log_level!r}: expected one of {', '.join(_LOG_LEVELS)}")
    if (
        not config.default_source
        or not re.fullmatch(r"[A-Za-z0-9._@+-]+", config.default_source)
        or (config.default_source.startswith("."))
    ):
        raise ConfigError(f"default_source = {config.default_source!r}: expected a plain file-name word")
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
    if config.amqp_url:
        validate_amqp_url(config.amqp_url)
    if config.queue_type not in _QUEUE_TYPES:
        raise ConfigError(f"queue_type = {config.queue_type!r}: expected one of {', '.join(_QUEUE_TYPES)}")
    if config.exchange_type not in _EXCHANGE_TYPES:
        raise ConfigError(
            f"exchange_type = {config.exchange_type!r}: expected one of {', '.join(_EXCHANGE_TYPES)}"
        )
    if config.overflow not in _OVERFLOW:
        raise ConfigError(f"overflow = {config.overflow!r}: expected one of {', '.join(_OVERFLOW)}")
    if config.buffer < 1:
        raise ConfigError(f"buffer = {config.buffer}: must be at least 1")
    for name in ("message_ttl", "max_length", "heartbeat"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} = {getattr(config, name)}: must not be negative")
    if config.refresh < 0:
        raise ConfigError(f"refresh = {config.refresh}: must not be negative")
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
    if config.multiline not in formatting.MULTILINE_MODES:
        raise ConfigError(
            f"multiline = {config.multiline!r}: expected one of {', '.join(formatting.MULTILINE_MODES)}"
        )
    if not config.json:
        try:
            formatting.text_formatter(config.format)
        except formatting.FormatError as exc:
            raise ConfigError(f"format: {exc}") from None


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


EXAMPLE: Final = f'''\
# zlogcollect collector configuration (TOML). Every key mirrors a
# `zlogcollect collect` flag (dashes become underscores); flags given on the
# command line win over this file. Values shown are the defaults.

# Endpoints the SUB socket binds; apps connect their PUB handler here.
bind = ["{DEFAULT_ENDPOINT}"]
# Topic prefixes to accept; empty means everything.
subscribe = []

# Directory for the log files (created if missing).
dir = "logs"
# Records without a root topic are written as if sent by this source.
default_source = "default"
# Built-in routes: one file per source ("{{source}}.log") and errors_file.
default_routes = true
# ERROR and worse from every source also go here; "" switches it off.
errors_file = "errors.log"
# Extra routes: "PATTERN=FILE". PATTERN uses AMQP wildcards against the topic
# (* = one word, # = zero or more); FILE may use {{source}}, {{level}}, {{host}}, {{pid}}.
route = [
  # "app1.ERROR.#=app1-errors.log",
  # "*.*.db.#=db/{{source}}-{{level}}.log",
]

# Rotation, exactly as logging.handlers.TimedRotatingFileHandler.
when = "midnight"          # S, M, H, D, midnight, W0-W6
interval = 1
backup_count = 0           # 0 keeps every rotated file
utc = false
# at_time = "00:00:00"     # time of day for midnight/W* rotation
compress = false           # gzip rotated files

# Line format (%-style) or one JSON object per line.
format = "{formatting.DEFAULT_FORMAT}"
json = false
multiline = "prefix"       # lines after a record's first start "TIME | SOURCE + "; "plain": as sent

# Batched writes: lines reach the file at most this many seconds after arrival.
flush_interval = 1.0
# Most distinct files; records for further ones go to _overflow.log (a peer
# inventing sources must not exhaust inodes or memory).
max_files = 10000
# Records larger than this (topic + text + extension) go to _malformed.log.
max_record_bytes = {MAX_RECORD_BYTES}
# Records the SUB socket may queue per sender before ZeroMQ drops (0 = unlimited).
rcvhwm = 20000
# Seconds to keep receiving after SIGTERM before exiting.
drain_timeout = 5.0
# The collector's own diagnostics on stderr.
log_level = "INFO"
# Print the counters line to stderr every this many seconds (0 = only on SIGUSR1 and at exit).
stats_interval = 0.0
# Also write the counters as JSON to this file, atomically, whenever the line is printed;
# "" = "_stats.json" in dir (collect; the bridge writes none unless told).
stats_file = ""

# The AMQP bridge (install with the amqp extra, pip install '.[amqp]'): forward every record to
# RabbitMQ as JSON with publisher confirms. Off while amqp_url is empty.
amqp_url = ""              # e.g. "amqp://guest:guest@127.0.0.1:5672/%2F"
# Or read the URL (with its password) from the first line of a file, e.g. a
# systemd credential; the environment variable ZLOGCOLLECT_AMQP_URL works too.
amqp_url_file = ""
exchange = "amq.topic"
exchange_type = "topic"
declare_exchange = false   # declare it (durable); else it must exist (amq.* always do)
routing_key = ""           # "" = "{{source}}.{{level}}"; "{{topic}}" for the whole topic
only = []                  # forward only topics matching these patterns; [] = all
declare_queue = [          # durable queues to declare and bind: "NAME=BINDING[,BINDING]"
  # "app1-error=app1.ERROR.#",
]
queue_type = "classic"     # classic, quorum or stream
dead_letter_exchange = ""
message_ttl = 0            # ms, 0 = none
max_length = 0             # messages, 0 = unlimited
buffer = 100000            # records held while the broker is unreachable
overflow = "drop-oldest"   # or "drop-newest", when the buffer is full
refresh = 0.0              # seconds between reconnects for load balancers; 0 = never
heartbeat = 30             # AMQP heartbeat, seconds
mandatory = true           # count records no queue was bound for as unroutable

# Custom level names senders use in topics, with their numbers.
[levels]
# TRACE = 5
# SUCCESS = 25
'''
